"""Child VM problems surface on the cluster: a ProxmoxVM rebooting to repair a stale cloud-init drive,
or reporting CloudInitStale=True (a restart needed), is named with its reason in VMsReady and Ready
instead of a generic wait, so a user sees why the cluster does not progress."""

from __future__ import annotations

from typing import Any

from .day2_world import NS, World, body, cond

AGENT = "demo-agent-0"


def set_conditions(w: World, name: str, *conditions: dict[str, Any]) -> None:
    child = w.objects.children[(NS, name)]
    by_type = {c["type"]: c for c in child["status"].get("conditions") or []}
    by_type.update({c["type"]: c for c in conditions})
    child["status"]["conditions"] = list(by_type.values())


async def ready_world() -> tuple[World, dict[str, Any]]:
    w, b = World(), body(1, 1)
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    return w, b


async def test_a_repair_reboot_for_stale_cloud_init_is_named_while_waiting() -> None:
    w, b = await ready_world()
    rebooting = "rebooting: the guest booted with stale cloud-init"
    set_conditions(
        w,
        AGENT,
        {"type": "Ready", "status": "False", "reason": "CloudInitStale", "message": rebooting},
        {"type": "AgentReady", "status": "False", "reason": "CloudInitStale", "message": rebooting},
    )
    out = await w.pass_(b)
    vms = cond(out, "VMsReady")
    assert (vms["status"], vms["reason"]) == ("False", "CloudInitStale"), vms
    assert f"ProxmoxVM {AGENT}: {rebooting}" in vms["message"]
    assert cond(out, "Ready")["reason"] == "CloudInitStale" and AGENT in cond(out, "Ready")["message"]
    node = next(n for n in out.status["nodes"] if n["name"] == AGENT)
    assert not node["ready"] and "CloudInitStale" in node["message"]


async def test_a_vm_that_needs_a_restart_keeps_the_cluster_from_ready_and_says_why() -> None:
    w, b = await ready_world()
    needs = "the guest runs with cloud-init data older than its config (sshkeys); set the annotation"
    stale = {"type": "CloudInitStale", "status": "True", "reason": "RestartRequired", "message": needs}
    set_conditions(w, AGENT, stale)
    out = await w.pass_(b)
    vms, ready = cond(out, "VMsReady"), cond(out, "Ready")
    assert (vms["status"], vms["reason"]) == ("False", "CloudInitStale"), vms
    assert AGENT in vms["message"] and "RestartRequired" in vms["message"] and needs in vms["message"]
    assert (ready["status"], ready["reason"]) == ("False", "CloudInitStale") and AGENT in ready["message"]
    # the nodes themselves were still looked at: the servers and agents are what they are
    assert cond(out, "ServersReady")["status"] == "True" and cond(out, "AgentsReady")["status"] == "True"
    # restarted with a fresh drive: the condition goes and the cluster is Ready again
    out = await w.settle(b)
    assert cond(out, "VMsReady")["status"] == "True" and cond(out, "Ready")["status"] == "True"


async def test_an_ordinary_wait_keeps_the_generic_reason() -> None:
    w, b = await ready_world()
    set_conditions(
        w, AGENT, {"type": "Ready", "status": "False", "reason": "Starting", "message": "starting"}
    )
    out = await w.pass_(b)
    vms = cond(out, "VMsReady")
    assert (vms["status"], vms["reason"]) == ("False", "WaitingForVMs") and "CloudInitStale" not in vms[
        "message"
    ]


async def test_a_refused_key_on_a_vm_with_stale_cloud_init_names_the_cause() -> None:
    """The key is refused because the guest booted without it: say so, not just "auth failed"."""
    w, b = await ready_world()
    needs = "the guest runs with cloud-init data older than its config (sshkeys); set the annotation"
    set_conditions(
        w, AGENT, {"type": "CloudInitStale", "status": "True", "reason": "RestartRequired", "message": needs}
    )
    w.ssh.hosts[w.ip(AGENT)].authorized_key = "the key the old drive put there"
    out = await w.pass_(b)
    ready, stalled, agents = cond(out, "Ready"), cond(out, "Stalled"), cond(out, "AgentsReady")
    for c in (ready, stalled, agents):
        assert c["reason"] == "CloudInitStale", c
        assert "refused the SSH key" in c["message"] and "restart the VM" in c["message"]
    assert (ready["status"], stalled["status"], agents["status"]) == ("False", "True", "False")
    node = next(n for n in out.status["nodes"] if n["name"] == AGENT)
    assert "RestartRequired" in node["message"]  # the Node itself may still be Ready in K3s
    assert [e.reason for e in out.events if e.type == "Warning"] == ["CloudInitStale"]
