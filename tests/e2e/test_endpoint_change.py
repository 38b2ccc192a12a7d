"""spec.endpoint changed on day 2 (issue 18): a user moves the cluster from one load balancer to a new
one. 1 server + 1 agent behind the lab's external-load-balancer stand-in at address A; the user sets up
a second one at B and changes spec.endpoint to B. What a user expects: the server restarts with B as a
TLS SAN, then the agent restarts and connects through B (the lab's agent records the URL it reached at
its start), the kubeconfig Secret names B, and once the old load balancer is switched off the cluster
still works and stays Ready, the agent included, across another restart of it.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.test_day2 import Lab, node_ready
from e2e.test_day2 import lab as lab  # the fixture (re-exported for this module)
from k3s_deploy_lab.sample_cluster import vip_address

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

NAME = "epc"


def _install(lab: Lab, node: str) -> Any:
    return next(i for i in lab.guests.k3s.installs.values() if i.node_name == node)


def _digests(obj: dict[str, Any]) -> dict[str, str]:
    return {n["name"]: n.get("configDigest") or "" for n in (obj.get("status") or {}).get("nodes") or []}


async def _kubeconfig(lab: Lab, path: Path) -> str:
    secret = await lab.get("secret", f"{NAME}-kubeconfig")
    text = base64.b64decode(secret["data"]["value"])
    await asyncio.to_thread(path.write_bytes, text)
    return str(yaml.safe_load(text)["clusters"][0]["cluster"]["server"])


async def _nodes_ready(lab: Lab, kubeconfig: Path) -> dict[str, bool]:
    out = await lab.run("get", "nodes", "-o", "json", "--request-timeout=5s", kubeconfig=kubeconfig)
    return {n["metadata"]["name"]: node_ready(n) for n in json.loads(out)["items"]}


async def test_an_endpoint_change_moves_the_agent_to_the_new_load_balancer(lab: Lab, tmp_path: Path) -> None:
    old = vip_address(lab.pve)
    new = str(ipaddress.ip_address(old) - 1)
    vip = lab.guests.k3s.vip
    vip.add_load_balancer(old)
    await lab.apply(lab.manifest(NAME, 1, 1, endpoint=old))
    before = _digests(await lab.ready(NAME))
    agent, server = f"{NAME}-agent-0", f"{NAME}-server-0"
    assert _install(lab, agent).server_url == f"https://{old}:6443"

    # the user's new load balancer, then the endpoint moved to it
    vip.add_load_balancer(new)
    await lab.patch(NAME, {"spec": {"endpoint": new}})
    started = time.monotonic()
    order: list[str] = []

    async def rolled() -> dict[str, Any] | None:
        obj = await lab.cluster(NAME)
        moved = [n for n, d in _digests(obj).items() if d != before[n] and n not in order]
        assert len(moved) <= 1, f"{moved} were reconfigured together"
        order.extend(moved)
        ready = {c["type"]: c["status"] for c in obj["status"].get("conditions") or []}.get("Ready")
        generation = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        return obj if len(order) == 2 and ready == "True" and generation else None

    await lab.wait(rolled, "the endpoint change rolled out", 240)
    print(f"\nendpoint change rolled out to 2 nodes in {time.monotonic() - started:.1f}s", flush=True)
    assert order == [server, agent]  # the server (its new SAN) first
    assert new in _install(lab, server).flags["tls-san"]
    # the agent restarted into the new URL and reached the cluster through it
    assert _install(lab, agent).flags["server"] == f"https://{new}:6443"
    assert _install(lab, agent).server_url == f"https://{new}:6443"
    kubeconfig = tmp_path / "kubeconfig"
    assert await _kubeconfig(lab, kubeconfig) == f"https://{new}:6443"
    assert (await lab.cluster(NAME))["status"]["serverURL"] == f"https://{new}:6443"

    # the old load balancer switched off: the cluster keeps working through the new one
    await vip.remove_load_balancer(old)
    await lab.run("version", "--request-timeout=5s", kubeconfig=kubeconfig)
    assert await _nodes_ready(lab, kubeconfig) == {server: True, agent: True}
    # the agent restarted again (as on any day): it still reaches the cluster, through the new endpoint
    install = _install(lab, agent)
    install.server_url = None
    guest = next(
        g
        for g in lab.guests.fleet.running.values()
        if lab.guests.k3s.installs.get(g.spec.instance_id) is install
    )
    await lab.guests.k3s._set_service(guest, True)  # what the guest's `systemctl restart k3s-agent` runs
    assert install.server_url == f"https://{new}:6443"
    await asyncio.sleep(3)
    assert await _nodes_ready(lab, kubeconfig) == {server: True, agent: True}
    obj = await lab.ready(NAME)
    assert _digests(obj)[agent] != before[agent]
