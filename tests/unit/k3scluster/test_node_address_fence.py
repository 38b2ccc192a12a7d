"""A member's address comes from its ProxmoxVM's status or the spec's pool, both of which the cluster's
author can write: a metadata, link-local, multicast or unspecified address is never dialled
(netpolicy.node_address_problem); the cluster stalls saying which VM and why."""

from __future__ import annotations

from typing import Any

import pytest

from .fakes import FakeHost
from .test_reconcile import KEY, World, cluster_body, cond


def _dialled(w: World) -> list[str]:
    hosts: list[str] = []
    real = w.ssh.run

    async def recording(target: Any, command: str, **kw: Any) -> Any:
        hosts.append(target.host)
        return await real(target, command, **kw)

    w.ssh.run = recording  # type: ignore[method-assign]
    return hosts


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.10.7", "224.0.0.251", "0.0.0.0"])
async def test_a_forged_proxmoxvm_address_is_never_dialled(address: str) -> None:
    w, body = World(), cluster_body(1, 0)
    del body["spec"]["network"]  # addresses come from the children's status (DHCP)
    await w.pass_(body)
    w.objects.boot_all(addresses={"demo-server-0": address})
    # something answers there, with the key the VM's agent reports: only the fence stops the dial
    w.ssh.hosts[address] = FakeHost(host_key=f"SHA256:key-of-{address}", authorized_key=KEY)
    hosts = _dialled(w)
    out = await w.pass_(body)
    assert hosts == [] and w.agents.reads == []
    stalled = cond(out, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "NodeAddressRefused"
    assert "demo-server-0" in stalled["message"] and address in stalled["message"]


async def test_a_pool_in_the_link_local_range_is_never_dialled() -> None:
    w, body = World(), cluster_body(1, 0)
    body["spec"]["network"]["ipPool"] = {
        "start": "169.254.169.250",
        "end": "169.254.169.254",
        "prefixLength": 16,
    }
    await w.pass_(body)
    w.boot()
    hosts = _dialled(w)
    out = await w.pass_(body)
    assert hosts == []
    assert cond(out, "Stalled")["reason"] == "NodeAddressRefused"


async def test_private_and_loopback_addresses_are_where_nodes_live() -> None:
    w, body = World(), cluster_body(1, 0)
    del body["spec"]["network"]
    await w.pass_(body)
    w.boot()
    for address in ("192.168.1.20", "127.42.0.5"):
        w.objects.boot_all(addresses={"demo-server-0": address})
        out = await w.pass_(body)
        assert "NodeAddressRefused" not in {c.get("reason") for c in out.status["conditions"]}
