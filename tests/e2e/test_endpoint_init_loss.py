"""The init server's VM destroyed outside the operator, with the control plane behind an endpoint
(issue 18). 3 servers spread over pve1..pve3 + 1 agent; ``spec.endpoint`` is a free address of the
lab's range, fronted either by kube-vip (``spec.kubeVip``: the guests' kube-vip stand-in moves the
address to a live server) or by the lab's external-load-balancer stand-in. What a user expects: the kubeconfig from the Secret keeps working through the endpoint
(it never named the lost server), the agent stays Ready, and the operator replaces the server (the
stale Node and so its etcd member removed, a new VM cloned and joined through the endpoint) until the
cluster is Ready again, with no manual step. The time to Ready after the destruction is printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.test_day2 import Lab, node_ready
from e2e.test_day2 import lab as lab  # the fixture (re-exported for this module)
from e2e.test_day2_vm_deleted import _replace_behind_the_back
from k3s_deploy_lab.guests.k3s.vip import FAILOVER_SECONDS, LEASE
from k3s_deploy_lab.sample_cluster import endpoint_spec, vip_address

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NAME = "ep"
# kube-vip's failover gap in the lab, plus a kubectl timeout and a poll: the only time the endpoint
# may not answer
GRACE = FAILOVER_SECONDS + 4.0


async def _secret_kubeconfig(lab: Lab, path: Path) -> str:
    secret = await lab.get("secret", f"{NAME}-kubeconfig")
    text = base64.b64decode(secret["data"]["value"])
    await asyncio.to_thread(path.write_bytes, text)
    return str(yaml.safe_load(text)["clusters"][0]["cluster"]["server"])


def _flag(install: Any, name: str) -> list[str]:
    value = install.flags.get(name)
    return [str(v) for v in value] if isinstance(value, list) else ([str(value)] if value else [])


async def _lease_holder(lab: Lab, kubeconfig: Path) -> str:
    out = await lab.run("get", "lease", "-n", "kube-system", LEASE, "-o", "json", kubeconfig=kubeconfig)
    return str(json.loads(out)["spec"]["holderIdentity"])


@pytest.mark.parametrize("front", ["kube-vip", "load-balancer"])
async def test_init_server_destroyed_behind_the_endpoint(
    lab: Lab, pve_sim: Any, tmp_path: Path, front: str
) -> None:
    """kube-vip: the operator deploys it (spec.kubeVip); load-balancer: the lab's stand-in for one the
    user runs in front of the servers (spec.endpoint alone)."""
    vip = vip_address(lab.pve)
    spec = endpoint_spec(lab.pve)
    if front == "load-balancer":
        del spec["kubeVip"]
        lab.guests.k3s.vip.add_load_balancer(vip)
    await lab.apply(lab.manifest(NAME, 3, 1, **spec))
    ready = await lab.ready(NAME)
    status = ready["status"]
    init = status["initServer"]
    servers = [n for n in status["nodes"] if n["role"] == "server"]
    assert len({n["pveNode"] for n in servers}) == 3, servers  # one server per Proxmox node
    assert status["serverURL"] == f"https://{vip}:6443"

    # the Secret's kubeconfig names the endpoint, never a server
    user_kubeconfig = tmp_path / "user.kubeconfig"
    assert await _secret_kubeconfig(lab, user_kubeconfig) == f"https://{vip}:6443"
    # every join (servers and the agent) went through the endpoint, which is a SAN of every server
    for install in lab.guests.k3s.installs.values():
        if install.node_name != init:
            assert _flag(install, "server") == [f"https://{vip}:6443"], (install.node_name, install.flags)
        if install.role == "server":
            assert vip in _flag(install, "tls-san"), install.flags
    # kube-vip was applied from the servers' auto-deploy directory; the init server leads
    daemonsets = await lab.run(
        "get", "daemonsets", "-n", "kube-system", "-o", "json", kubeconfig=user_kubeconfig
    )
    found = {d["metadata"]["name"]: d for d in json.loads(daemonsets)["items"]}
    if front == "kube-vip":
        assert found["kube-vip"]["spec"]["template"]["spec"]["hostNetwork"] is True
        assert await _lease_holder(lab, user_kubeconfig) == init
    else:
        assert "kube-vip" not in found  # nothing deployed for an endpoint the user runs

    # from the destruction on: the user's kubeconfig, every 0.5 s, and the agent's Ready condition
    destroyed_at = 0.0
    calls: list[tuple[float, bool, str]] = []  # (seconds after the destruction, worked, agent Ready)
    stop = asyncio.Event()

    async def use_the_cluster() -> None:
        while not stop.is_set():
            proc = await asyncio.to_thread(
                lab.kubectl,
                "get",
                "nodes",
                "-o",
                "json",
                "--request-timeout=5s",
                kubeconfig=user_kubeconfig,
                check=False,
            )
            worked = proc.returncode == 0
            agent = ""
            if worked:
                nodes = {n["metadata"]["name"]: n for n in json.loads(proc.stdout)["items"]}
                agent = "Ready" if node_ready(nodes[f"{NAME}-agent-0"]) else "NotReady"
            if destroyed_at:
                calls.append((time.monotonic() - destroyed_at, worked, agent))
            await asyncio.sleep(0.5)

    user = asyncio.create_task(use_the_cluster())
    try:
        destroyed_at = time.monotonic()
        # the VM-deleted path of test_day2_vm_deleted: destroyed in Proxmox, reported, re-cloned,
        # rejoined, Ready, same init server name, the kubeconfig Secret untouched
        await _replace_behind_the_back(lab, pve_sim, NAME, init)
        to_ready = time.monotonic() - destroyed_at
        # and the endpoint keeps answering after kube-vip's failover, however fast the repair was
        await asyncio.sleep(max(0.0, GRACE + 3.0 - (time.monotonic() - destroyed_at)))
    finally:
        stop.set()
        await user
    failed = [round(t, 1) for t, worked, _ in calls if not worked]
    print(
        f"\n{front}: init server {init} destroyed: cluster Ready again after {to_ready:.1f} s; the user's kubeconfig "
        f"answered {len(calls) - len(failed)} of {len(calls)} calls (failed at {failed} s)",
        flush=True,
    )

    # the user's kubeconfig kept working: at most kube-vip's failover gap, never after it
    assert calls and sum(1 for _, worked, _ in calls if worked) >= len(calls) // 2, calls
    assert all(t < GRACE for t in failed), f"the endpoint stopped answering at {failed} s"
    assert any(t > GRACE and worked for t, worked, _ in calls)
    # the agent stayed Ready whenever the cluster answered
    assert all(agent == "Ready" for _, worked, agent in calls if worked), calls
    # the address moved to a surviving server, and the replacement joined through it
    if front == "kube-vip":
        holder = await _lease_holder(lab, user_kubeconfig)
        assert holder != init and holder.startswith(f"{NAME}-server-"), holder
    rejoined = next(i for i in lab.guests.k3s.installs.values() if i.node_name == init)
    assert _flag(rejoined, "server") == [f"https://{vip}:6443"], rejoined.flags
    assert await _secret_kubeconfig(lab, user_kubeconfig) == f"https://{vip}:6443"
