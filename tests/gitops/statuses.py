"""Objects carrying statuses the operator's own code wrote: whole reconcile passes over the unit
fakes (the same passes the controllers run), and the acknowledgement the handlers write before a pass.

Each sample is (kind, name) -> object; the tests feed them to the real kstatus and Argo CD Lua.
"""

from __future__ import annotations

import copy
from typing import Any

from k3s_deploy.services.conditions import acknowledge
from unit.k3scluster.day2_world import NS, World, body, bump
from unit.proxmoxvm.driver import Driver
from unit.proxmoxvm.driver import body as vm_body
from unit.proxmoxvm.test_reconcile import AGENT, clone_spec, pve_with_template

Samples = dict[str, dict[str, Any]]


def _with(
    obj: dict[str, Any], status: dict[str, Any] | None, generation: int | None = None
) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out.pop("status", None)
    if status is not None:
        out["status"] = copy.deepcopy(status)
    if generation is not None:
        out["metadata"]["generation"] = generation
    return out


async def clusters() -> Samples:
    """K3sCluster: no status, fresh, Ready, new generation unobserved / acknowledged, Stopped, Stalled."""
    w, b = World(), body(1, 1)
    out: Samples = {"no-status": _with(b, None)}
    out["fresh"] = _with(b, acknowledge(None, 1))
    await w.pass_(b)
    await w.settle(b)
    out["ready"] = _with(b, b["status"])
    out["new-generation"] = _with(b, b["status"], generation=2)
    out["new-generation-acknowledged"] = _with(b, acknowledge(b["status"], 2), generation=2)

    b["spec"]["powerState"] = "Stopped"
    bump(b)
    for _ in range(4):  # agents stop, then servers: the ProxmoxVM controller reports them stopped
        await w.pass_(b)
        for child in w.objects.children.values():
            if child["spec"].get("powerState") == "Stopped":
                child["status"]["powerState"] = "Stopped"
    out["stopped"] = _with(b, b["status"])

    s, sb = World(), body(1, 0)
    s.objects.secrets.pop((NS, "ssh"))  # the SSH key Secret is missing: a permanent error
    await s.pass_(sb)
    await s.settle(sb)
    out["stalled"] = _with(sb, sb["status"])
    out["stalled-new-generation"] = _with(sb, sb["status"], generation=2)
    out["stalled-acknowledged"] = _with(sb, acknowledge(sb["status"], 2), generation=2)
    return out


async def vms() -> Samples:
    """ProxmoxVM: fresh, Ready (running), Stopped as asked, Stalled (template missing)."""
    out: Samples = {}
    pve = pve_with_template()
    running = Driver(vm_body(clone_spec()), pve)
    out["fresh"] = _with(running.obj, acknowledge(None, 1))
    await running.once()
    pve.vms[100].agent_interfaces = AGENT
    await running.converge()
    out["ready"] = _with(running.obj, running.obj["status"])

    stopped = Driver(vm_body(clone_spec(powerState="Stopped"), name="vm-b"), pve_with_template())
    await stopped.converge()
    out["stopped"] = _with(stopped.obj, stopped.obj["status"])

    broken = clone_spec()
    broken["source"] = {"clone": {"template": {"name": "no-such-template"}}}
    stalled = Driver(vm_body(broken, name="vm-c"), pve_with_template())
    await stalled.once()
    out["stalled"] = _with(stalled.obj, stalled.obj["status"])
    return out
