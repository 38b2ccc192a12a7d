"""Status never contradicts itself: every status the controller writes (the final one of a pass and
those flushed midway before a risky step) says Ready=True only when every desired node is listed and
Ready, and the stored status after a pass is that pass's outcome, not a midway snapshot."""

from __future__ import annotations

from typing import Any

from .day2_world import KEY, NS, World, body, cond
from .fakes import FakeHost
from .test_metrics_wiring import Harness


def contradictions(status: dict[str, Any]) -> list[str]:
    """What a status claims against itself (empty when consistent)."""
    conds = {c["type"]: c for c in status.get("conditions") or []}
    listed = [n for n in status.get("nodes") or [] if n.get("state") != "Removing"]
    out = []
    for role, step in (("server", "ServersReady"), ("agent", "AgentsReady")):
        mine = [n for n in listed if n.get("role") == role]
        ready = sum(1 for n in mine if n.get("ready"))
        counted, desired = (
            status.get(f"ready{role.capitalize()}s"),
            status.get(f"desired{role.capitalize()}s"),
        )
        if counted is not None and counted != ready:
            out.append(f"ready{role.capitalize()}s={counted} but {ready} listed as ready")
        all_in = ready == len(mine) and ready >= (desired or 0)
        for name in (step, "Ready"):
            if (conds.get(name) or {}).get("status") == "True" and not all_in:
                out.append(f"{name}=True with {ready}/{desired} {role}s ready")
    if (conds.get("Ready") or {}).get("status") == "True" and "Reconciling" in conds:
        out.append("Ready=True while Reconciling")
    return out


async def test_no_written_status_is_ready_while_a_replaced_agent_rejoins() -> None:
    """The agent's VM is re-created (new vmid, booted, no K3s yet) while the cluster is Ready: the
    status flushed before installing it must not keep the previous pass's Ready=True."""
    w, b = World(), body(1, 1)
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    agent = "demo-agent-0"
    ip = w.ip(agent)
    w.ssh.hosts[ip] = FakeHost(host_key="SHA256:a-new-machine", authorized_key=KEY)
    w.target.stale.add(agent)
    w.objects.children[(NS, agent)]["status"]["vmid"] += 100
    w.objects.status_patches.clear()

    out = await w.pass_(b)
    written = [*w.objects.status_patches, out.status]
    assert len(written) > 1, "the install flushes status midway"
    for status in written:
        assert contradictions(status) == [], status["conditions"]
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and contradictions(out.status) == []
    assert all(n["ready"] for n in out.status["nodes"])


async def test_ready_needs_every_desired_node_listed() -> None:
    """Step conditions left True by an earlier pass do not make Ready while a desired agent is absent
    from status.nodes (a pass that ended before the nodes were looked at)."""
    w, b = World(), body(1, 1)
    await w.pass_(b)
    await w.settle(b)
    b["status"]["nodes"] = [n for n in b["status"]["nodes"] if n["role"] == "server"]
    b["status"]["readyAgents"] = 0
    b["spec"]["paused"] = True  # the pass keeps the nodes it was given
    out = await w.pass_(b)
    assert cond(out, "Ready")["status"] != "True", out.status["conditions"]
    assert cond(out, "AgentsReady")["status"] == "False"
    assert "0/1 agents" in cond(out, "AgentsReady")["message"]
    assert contradictions(out.status) == []


async def test_stored_status_is_the_outcome_after_a_pass_that_flushed_midway() -> None:
    """A joined server whose K3s lost its admin kubeconfig is installed again (status flushed midway,
    as Installing); the pass ends as the previous one did, and that final status must still be written."""
    h = Harness("consistency", servers=3, agents=0)
    await h.until("Ready")
    assert contradictions(h.status) == []
    server = h.world.ssh.hosts[h.world.ip("consistency-server-1")]
    server.kubeconfig = None  # probe: K3s installed, server not up -> reinstalled this pass
    patches = h.world.objects.status_patches
    before = len(patches)
    await h.once()
    assert h.world.of("install").count("consistency-server-1") == 2
    assert len(patches) > before + 1, "a midway flush and the final write"
    assert patches[-1] == h.status, "the stored status is the pass's outcome"
    assert contradictions(patches[-1]) == [] and h.status["phase"] == "Ready"
    for status in patches[before:]:
        assert contradictions(status) == [], status["conditions"]
