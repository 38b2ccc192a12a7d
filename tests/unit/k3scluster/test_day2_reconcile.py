"""Day-2 operations through whole reconcile passes against fakes: the order of node operations,
progress in status, pause, failure, resume after a crash, scale-down, power, drift, version check."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k3s_deploy.services.k3scluster import node_config

from .day2_world import NS, A, B, C, Channels, World, body, bump, cond


async def ready_cluster(servers: int = 3, agents: int = 2, **spec: Any) -> tuple[World, dict[str, Any]]:
    w, b = World(), body(servers, agents, **spec)
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    w.ops.clear()
    return w, b


def upgrade_to(b: dict[str, Any], version: str) -> None:
    b["spec"]["k3s"]["version"] = version
    bump(b)


async def test_upgrade_servers_one_by_one_then_agents_each_cordoned_drained_uncordoned() -> None:
    w, b = await ready_cluster()
    upgrade_to(b, B)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    order = w.of("install")
    assert order == ["demo-server-0", "demo-server-1", "demo-server-2", "demo-agent-0", "demo-agent-1"]
    for name in order:
        mine = [op for op, n in w.ops if n == name]
        assert mine == ["cordon", "drain", "install", "uncordon"], (name, mine)
    # one node at a time: each node is uncordoned before the next is cordoned
    sequence = [n for op, n in w.ops if op in ("cordon", "uncordon")]
    assert sequence == [n for n in order for _ in (0, 1)]
    st = out.status
    assert st["upgrade"]["state"] == "Complete" and st["upgrade"]["fromVersion"] == A
    assert sorted(st["upgrade"]["completedNodes"]) == sorted(order)
    assert st["k3sVersion"] == B and all(n["k3sVersion"] == B for n in st["nodes"])
    assert not w.target.cordoned
    # the join arguments were kept: the init server re-ran as init, the others still join it
    init_script = w.ssh.hosts[w.ip("demo-server-0")].scripts[-1]
    assert f"INSTALL_K3S_VERSION={B}" in init_script and "--cluster-init" in init_script
    joiner = w.ssh.hosts[w.ip("demo-server-1")]
    assert "--cluster-init" not in joiner.scripts[-1]
    assert node_config.JOIN_FILE in joiner.scripts[-1] and joiner.files[node_config.JOIN_FILE]


async def test_agents_upgrade_with_bounded_concurrency() -> None:
    w, b = await ready_cluster(1, 5, upgrade={"agentConcurrency": 2})
    upgrade_to(b, B)
    await w.settle(b)
    assert w.of("install")[0] == "demo-server-0"
    # batches of at most two agents are recorded in flight together
    batches = [
        tuple(p["upgrade"]["currentNodes"])
        for p in w.objects.status_patches
        if (p.get("upgrade") or {}).get("currentNodes")
    ]
    agent_batches = [x for x in dict.fromkeys(batches) if "agent" in x[0]]
    assert [len(x) for x in agent_batches] == [2, 2, 1]
    assert sorted(n for x in agent_batches for n in x) == [f"demo-agent-{i}" for i in range(5)]


async def test_pause_stops_between_nodes_and_resume_continues() -> None:
    w, b = await ready_cluster()
    upgrade_to(b, B)
    first = await w.pass_(b)
    assert w.of("install") == ["demo-server-0"] and first.requeue_after
    assert first.status["upgrade"]["completedNodes"] == ["demo-server-0"]
    b["spec"]["paused"] = True
    bump(b)
    paused = await w.pass_(b)
    assert paused.status["upgrade"]["state"] == "Paused" and paused.status["phase"] == "Paused"
    await w.pass_(b)
    assert w.of("install") == ["demo-server-0"]
    b["spec"]["paused"] = False
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    assert w.of("install").count("demo-server-0") == 1 and len(w.of("install")) == 5


async def test_failed_node_stops_the_rollout_naming_it_until_the_spec_changes() -> None:
    w, b = await ready_cluster()
    w.ssh.hosts[w.ip("demo-server-1")].fail_install = "[ERROR]  Download failed"
    upgrade_to(b, B)
    out = await w.settle(b)
    stalled = cond(out, "Stalled")
    assert stalled["reason"] == "UpgradeFailed" and "demo-server-1" in stalled["message"]
    assert cond(out, "UpToDate")["reason"] == "UpgradeFailed"
    assert (
        out.status["upgrade"]["state"] == "Failed" and out.status["upgrade"]["failedNode"] == "demo-server-1"
    )
    assert w.of("install") == ["demo-server-0", "demo-server-1"]
    # no retry storm: later passes do not touch the nodes
    again = await w.pass_(b)
    assert w.of("install") == ["demo-server-0", "demo-server-1"] and again.error is not None
    # the failed node stays cordoned for inspection
    assert "demo-server-1" in w.target.cordoned
    w.ssh.hosts[w.ip("demo-server-1")].fail_install = None
    bump(b)  # any spec change retries
    fixed = await w.settle(b)
    assert cond(fixed, "Ready")["status"] == "True", fixed.status["conditions"]
    assert fixed.status["upgrade"]["state"] == "Complete" and not w.target.cordoned


async def test_operator_killed_mid_upgrade_resumes_without_double_upgrade() -> None:
    w, b = await ready_cluster()
    upgrade_to(b, B)
    await w.pass_(b)  # server-0 done
    w.ssh.crash_after_install = "demo-server-1"
    with pytest.raises(RuntimeError):
        await w.pass_(b)
    # what survived the crash is the status flushed before the install
    b["status"] = copy.deepcopy(w.objects.status_patches[-1])
    assert b["status"]["upgrade"]["currentNodes"] == ["demo-server-1"]
    w.ssh.crash_after_install = None
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    installs = w.of("install")
    assert installs == ["demo-server-0", "demo-server-1", "demo-server-2", "demo-agent-0", "demo-agent-1"]
    assert "demo-server-1" not in w.target.cordoned


async def test_crash_before_the_install_resumes_the_same_server_first() -> None:
    w, b = await ready_cluster()
    upgrade_to(b, B)
    await w.pass_(b)
    flushed = [p for p in w.objects.status_patches if (p.get("upgrade") or {}).get("currentNodes")]
    # pretend the process died right after recording server-1 as in flight, before installing it
    b["status"] = copy.deepcopy(flushed[-1])
    b["status"]["upgrade"]["currentNodes"] = ["demo-server-1"]
    b["status"]["upgrade"]["completedNodes"] = []
    await w.pass_(b)
    assert w.of("install") == ["demo-server-0", "demo-server-1"]


async def test_downgrade_refused_unless_allowed() -> None:
    w, b = await ready_cluster(1, 1, k3s={"version": B})
    upgrade_to(b, A)
    out = await w.settle(b)
    assert cond(out, "Stalled")["reason"] == "DowngradeRefused" and w.of("install") == []
    b["spec"]["k3s"]["allowDowngrade"] = True
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and out.status["k3sVersion"] == A


async def test_version_check_reports_update_available_and_auto_upgrade_follows_the_channel() -> None:
    w, b = await ready_cluster(1, 1)
    w.channels.table["stable"] = B
    b["status"].pop("channelResolution", None)
    out = await w.settle(b)
    assert out.status["availableVersion"] == B
    up = cond(out, "UpToDate")
    assert (up["status"], up["reason"]) == ("False", "UpdateAvailable") and B in up["message"]
    assert cond(out, "Ready")["status"] == "True" and w.of("install") == []
    # follow the channel with autoUpgrade: the cluster rolls to the channel's version
    b["spec"]["k3s"] = {"channel": "stable", "autoUpgrade": True}
    bump(b)
    out = await w.settle(b)
    assert w.of("install") == ["demo-server-0", "demo-agent-0"]
    assert out.status["k3sVersion"] == B and cond(out, "UpToDate")["status"] == "True"
    assert out.status["channelResolution"]["version"] == B


async def test_channel_server_down_is_reported_not_fatal() -> None:
    class Down(Channels):
        async def fetch(self, url: str) -> object:
            from k3s_deploy import errors

            raise errors.TransientError("no route", reason="ChannelServerUnavailable")

    w, b = World(Down()), body(1, 0)
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    assert cond(out, "UpToDate")["reason"] == "ChannelServerUnavailable"


async def test_scale_agents_down_drains_deletes_uninstalls_then_removes_the_vm() -> None:
    w, b = await ready_cluster(1, 3)
    b["spec"]["agents"]["replicas"] = 1
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    for name in ("demo-agent-2", "demo-agent-1"):
        assert [op for op, n in w.ops if n == name] == ["cordon", "drain", "delete-node", "uninstall"]
    assert w.objects.deleted_children == ["demo-agent-2", "demo-agent-1"]
    assert [n["name"] for n in out.status["nodes"]] == ["demo-server-0", "demo-agent-0"]
    assert out.status["readyAgents"] == 1


async def test_scale_servers_five_to_three_one_at_a_time_keeping_quorum() -> None:
    w, b = await ready_cluster(5, 0)
    b["spec"]["servers"]["replicas"] = 3
    bump(b)
    w.target.not_ready.add("demo-server-1")
    held = await w.pass_(b)
    assert w.objects.deleted_children == [] and cond(held, "Reconciling")["reason"] == "ScalingDown"
    assert "demo-server-1" in cond(held, "Reconciling")["message"]
    w.target.not_ready.clear()
    out = await w.settle(b)
    assert w.objects.deleted_children == ["demo-server-4", "demo-server-3"]
    assert w.of("delete-node") == ["demo-server-4", "demo-server-3"]
    assert w.of("uninstall") == ["demo-server-4", "demo-server-3"]  # host keys stayed pinned while held
    assert cond(out, "Ready")["status"] == "True" and out.status["readyServers"] == 3
    # scaling up again re-creates the members, which join
    b["spec"]["servers"]["replicas"] = 5
    bump(b)
    for key in [k for k, c in w.objects.children.items() if c["metadata"].get("deletionTimestamp")]:
        del w.ssh.hosts[w.ip(key[1])]  # the VM is gone with its disk; a new one comes up at that address
        del w.objects.children[key]
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and out.status["readyServers"] == 5


async def test_removing_the_init_server_moves_the_anchor() -> None:
    w, b = await ready_cluster(3, 0)
    b["status"]["initServer"] = "demo-server-2"  # say server-2 had initialised the cluster
    b["spec"]["servers"]["replicas"] = 1
    bump(b)
    out = await w.settle(b)
    assert out.status["initServer"] == "demo-server-0"


async def test_stop_agents_then_servers_and_start_servers_then_agents() -> None:
    w, b = await ready_cluster(1, 2)
    b["spec"]["powerState"] = "Stopped"
    bump(b)

    def wanted() -> dict[str, str]:
        return {n: c["spec"]["powerState"] for (_, n), c in w.objects.children.items()}

    def observe(**states: str) -> None:
        for (_, n), c in w.objects.children.items():
            role = "server" if "server" in n else "agent"
            c["status"]["powerState"] = states[role]

    out = await w.pass_(b)
    assert wanted() == {"demo-server-0": "Running", "demo-agent-0": "Stopped", "demo-agent-1": "Stopped"}
    assert out.status["phase"] == "Stopping" and out.requeue_after
    observe(server="Running", agent="Stopped")
    await w.pass_(b)
    assert wanted()["demo-server-0"] == "Stopped"
    observe(server="Stopped", agent="Stopped")
    out = await w.pass_(b)
    assert out.status["phase"] == "Stopped" and out.requeue_after is None
    # stopped as asked is the desired state: Ready, with reason Stopped (kstatus Current, Argo CD Healthy)
    assert (cond(out, "Ready")["status"], cond(out, "Ready")["reason"]) == ("True", "Stopped")
    assert (
        cond(out, "PoweredOn")["status"] == "False"
        and cond(out, "ServersReady")["reason"] == "ClusterStopped"
    )
    assert "Reconciling" not in {c["type"] for c in out.status["conditions"]}

    b["spec"]["powerState"] = "Running"
    bump(b)
    out = await w.pass_(b)
    assert wanted() == {"demo-server-0": "Running", "demo-agent-0": "Stopped", "demo-agent-1": "Stopped"}
    assert out.status["phase"] == "Starting"
    observe(server="Running", agent="Stopped")
    await w.pass_(b)
    assert set(wanted().values()) == {"Running"}
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and cond(out, "PoweredOn")["status"] == "True"


async def test_drift_k3s_removed_by_hand_is_reinstalled() -> None:
    w, b = await ready_cluster(1, 1)
    w.ssh.hosts[w.ip("demo-agent-0")].version = None
    w.target.not_ready.add("demo-agent-0")  # the reinstalled node takes a moment to be Ready
    out = await w.pass_(b)
    drift = cond(out, "NodesInSync")
    assert (drift["status"], drift["reason"]) == ("False", "K3sMissing") and "demo-agent-0" in drift[
        "message"
    ]
    assert any(e.reason == "DriftDetected" and "demo-agent-0" in e.message for e in out.events)
    assert w.of("install") == ["demo-agent-0"]
    w.target.not_ready.clear()
    out = await w.settle(b)
    assert cond(out, "NodesInSync")["status"] == "True" and cond(out, "Ready")["status"] == "True"


async def test_drift_node_deleted_from_the_cluster_rejoins() -> None:
    w, b = await ready_cluster(1, 1)
    w.target.deleted["demo-agent-0"] = w.target._installs("demo-agent-0")
    out = await w.pass_(b)
    # repaired within the pass: reinstalling registered the node again and the cluster is Ready
    drift = cond(out, "NodesInSync")
    assert (drift["status"], drift["reason"]) == ("True", "Repaired") and "demo-agent-0" in drift["message"]
    assert cond(out, "Ready")["status"] == "True"
    assert w.of("install") == ["demo-agent-0"]
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"


async def test_drift_vm_stopped_outside_is_reported() -> None:
    w, b = await ready_cluster(1, 1)
    w.objects.children[(NS, "demo-agent-0")]["status"]["powerState"] = "Stopped"
    out = await w.pass_(b)
    assert (
        cond(out, "NodesInSync")["reason"] == "VMStopped"
        and "demo-agent-0" in cond(out, "NodesInSync")["message"]
    )
    assert w.objects.children[(NS, "demo-agent-0")]["spec"]["powerState"] == "Running"


def test_constants_are_distinct() -> None:
    assert len({A, B, C}) == 3
