"""Drift: a member's VM destroyed outside the operator, through whole reconcile passes on fakes.

The ProxmoxVM controller's part (status.vmid cleared at VMMissing, a new clone under a new vmid) is
played by the test; the K3sCluster must report the loss by node and vmid, forget what it learned from
the old machine (host-key pin, K3s version), delete the stale Node before the member rejoins, and end
Ready with the kubeconfig Secret untouched.
"""

from __future__ import annotations

import copy
from typing import Any

from k3s_deploy.services.k3scluster.day2 import VM_REPLACED

from .day2_world import KEY, NS, World, body, cond
from .fakes import FakeHost, fingerprint_of


async def ready(servers: int, agents: int) -> tuple[World, dict[str, Any]]:
    w, b = World(), body(servers, agents)
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    w.ops.clear()
    return w, b


def entry(b: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in b["status"]["nodes"] if n["name"] == name)


def vm_state(w: World, name: str, *, vmid: int | None, ready: bool, reason: str) -> None:
    """What the ProxmoxVM reports: which VM it has now and whether it is Ready."""
    child = w.objects.children[(NS, name)]
    child["status"] = {
        "vmid": vmid,
        "node": "pve1",
        "addresses": list((child.get("status") or {}).get("addresses") or []) if ready else [],
        "powerState": "Running" if ready else None,
        "conditions": [{"type": "Ready", "status": str(ready), "reason": reason, "message": reason}],
    }
    if vmid is None:
        del child["status"]["vmid"]


async def destroy_and_reclone(w: World, b: dict[str, Any], name: str) -> None:
    ip = w.ip(name)
    before = copy.deepcopy(entry(b, name))
    kubeconfig = copy.deepcopy(w.objects.secrets[(NS, "demo-kubeconfig")])
    w.target.stale.add(name)  # the Node stays registered (NotReady) after its machine is gone
    w.ssh.hosts.pop(ip)

    # 1. the ProxmoxVM noticed the VM is gone (VMMissing, vmid cleared)
    vm_state(w, name, vmid=None, ready=False, reason="VMMissing")
    out = await w.pass_(b)
    drift = cond(out, "NodesInSync")
    assert (drift["status"], drift["reason"]) == ("False", "VMMissing"), drift
    assert name in drift["message"] and str(before["vmid"]) in drift["message"]
    assert cond(out, "Ready")["status"] == "False"
    warnings = [e.message for e in out.events if e.reason == "DriftDetected"]
    assert len(warnings) == 1 and name in warnings[0] and str(before["vmid"]) in warnings[0]
    now = entry(b, name)
    assert now["state"] == VM_REPLACED and "hostKeyFingerprint" not in now and "k3sVersion" not in now

    # 2. it clones a new VM (new vmid, booting): still reported, not announced again
    vm_state(w, name, vmid=before["vmid"] + 100, ready=False, reason="Cloning")
    out = await w.pass_(b)
    assert cond(out, "NodesInSync")["status"] == "False" and name in cond(out, "NodesInSync")["message"]
    assert not [e for e in out.events if e.reason == "DriftDetected"]
    assert entry(b, name)["state"] == VM_REPLACED and "hostKeyFingerprint" not in entry(b, name)

    # 3. the new VM boots at the same (pool) address with a new host key and no K3s
    w.ssh.hosts[ip] = FakeHost(host_key="SHA256:a-new-machine", authorized_key=KEY)
    vm_state(w, name, vmid=before["vmid"] + 100, ready=True, reason="Ready")
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    assert cond(out, "NodesInSync")["status"] == "True"
    # the stale Node went before the member joined again, once
    assert w.ops.index(("delete-node", name)) < w.ops.index(("install", name))
    assert w.of("install") == [name] and w.of("delete-node") == [name]
    after = entry(b, name)
    assert after["vmid"] == before["vmid"] + 100 and after["hostKeyFingerprint"] == fingerprint_of(
        "SHA256:a-new-machine"
    )
    assert after["ready"] and after["k3sVersion"] == before["k3sVersion"]
    assert w.objects.secrets[(NS, "demo-kubeconfig")] == kubeconfig
    assert b["status"]["initServer"] == "demo-server-0"


async def test_agent_vm_destroyed_outside_is_reported_and_rejoins_on_the_new_vm() -> None:
    w, b = await ready(1, 1)
    await destroy_and_reclone(w, b, "demo-agent-0")


async def test_joined_server_vm_destroyed_outside_rejoins_as_a_server() -> None:
    w, b = await ready(3, 1)
    await destroy_and_reclone(w, b, "demo-server-2")
    script = w.ssh.hosts[w.ip("demo-server-2")].scripts[-1]
    assert " server " in script and "--cluster-init" not in script


async def test_a_clone_redone_before_first_contact_is_not_drift() -> None:
    """A VM that was never reached (still provisioning) getting another vmid is not a loss."""
    w, b = World(), body(1, 0)
    await w.pass_(b)  # children created; none booted yet
    vm_state(w, "demo-server-0", vmid=100, ready=False, reason="Cloning")
    await w.pass_(b)
    vm_state(w, "demo-server-0", vmid=101, ready=False, reason="Cloning")
    out = await w.pass_(b)
    assert not [e for e in out.events if e.reason == "DriftDetected"]
    assert cond(out, "NodesInSync").get("status") != "False"
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
