"""Day-2 planners (pure): versions, channel answers, rollout steps, scale-down order, cluster power."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import channels, power, scaling, upgrade, versions
from k3s_deploy.services.k3scluster.upgrade import NodeState, Policy, Progress

A, B, C = "v1.30.8+k3s1", "v1.31.4+k3s1", "v1.32.0+k3s1"


# --- versions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("v1.31.4+k3s1", "v1.31.4+k3s2"),
        ("v1.31.4+k3s2", "v1.31.5+k3s1"),
        ("v1.31.9+k3s1", "v1.32.0+k3s1"),
        ("v1.32.0-rc1+k3s1", "v1.32.0-rc2+k3s1"),
        ("v1.32.0-rc2+k3s1", "v1.32.0+k3s1"),
        ("v1.9.0+k3s1", "v1.10.0+k3s1"),
    ],
)
def test_version_order(older: str, newer: str) -> None:
    assert versions.newer(newer, older)
    assert not versions.newer(older, newer)
    assert versions.lowest([newer, None, older]) == older
    assert versions.highest([older, newer]) == newer


def test_not_a_version_is_refused() -> None:
    with pytest.raises(errors.InvalidSpec):
        versions.key("latest")
    assert versions.lowest([None, "garbage"]) is None


def test_downgrade_refused_unless_allowed() -> None:
    with pytest.raises(errors.InvalidSpec) as info:
        versions.check_downgrade(A, [B, A], allowed=False)
    assert info.value.reason == "DowngradeRefused" and B in info.value.message
    versions.check_downgrade(A, [B], allowed=True)
    versions.check_downgrade(C, [A, B], allowed=False)
    versions.check_downgrade(B, [B], allowed=False)


# --- channels -------------------------------------------------------------------------------------

DOC = {
    "type": "collection",
    "data": [
        {"id": "stable", "type": "channel", "name": "stable", "latest": B},
        {"id": "latest", "type": "channel", "name": "latest", "latest": C},
        {"id": "v1.30", "type": "channel", "name": "v1.30", "latest": A},
        {"id": "broken", "name": "broken"},
        "noise",
    ],
}


def test_channel_document_parsed() -> None:
    assert channels.parse(DOC) == {"stable": B, "latest": C, "v1.30": A}
    with pytest.raises(errors.TransientError):
        channels.parse({"type": "error"})


class Server:
    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, url: str) -> object:
        self.calls += 1
        return DOC


async def test_resolution_cached_for_a_while_then_refreshed() -> None:
    server, now = Server(), datetime(2026, 1, 1, tzinfo=UTC)
    first = await channels.resolve(server, "https://x/v1-release/channels", "stable", previous=None, now=now)
    assert (first.version, server.calls) == (B, 1)
    again = await channels.resolve(
        server, "u", "stable", previous=first.as_status(), now=now + timedelta(minutes=1)
    )
    assert (again.version, server.calls) == (B, 1)
    other = await channels.resolve(
        server, "u", "latest", previous=first.as_status(), now=now + timedelta(minutes=1)
    )
    assert (other.version, server.calls) == (C, 2)
    later = now + channels.CHANNEL_TTL + timedelta(seconds=1)
    await channels.resolve(server, "u", "stable", previous=first.as_status(), now=later)
    assert server.calls == 3
    with pytest.raises(errors.InvalidSpec) as info:
        await channels.resolve(server, "u", "nope", previous=None, now=now)
    assert info.value.reason == "UnknownChannel" and "stable" in info.value.message


# --- rolling upgrade ------------------------------------------------------------------------------


def cluster(servers: int = 3, agents: int = 2, version: str = A) -> list[NodeState]:
    return [NodeState(f"s{i}", "server", version) for i in range(servers)] + [
        NodeState(f"a{i}", "agent", version) for i in range(agents)
    ]


def simulate(nodes: list[NodeState], target: str, policy: Policy) -> list[tuple[str, ...]]:
    """Run the planner to completion, applying each batch; returns the batches."""
    progress = upgrade.begin(Progress(), nodes, target, now="t0")
    batches: list[tuple[str, ...]] = []
    for _ in range(50):
        step = upgrade.next_step(nodes, target, progress, policy)
        if step.kind in ("done", "none"):
            return batches
        assert step.kind == "upgrade", step
        batches.append(step.nodes)
        nodes = [NodeState(n.name, n.role, target if n.name in step.nodes else n.version) for n in nodes]
        progress = Progress(
            to_version=target, state=upgrade.PROGRESSING, completed=(*progress.completed, *step.nodes)
        )
    raise AssertionError("rollout did not finish")


@pytest.mark.parametrize(
    ("servers", "agents", "concurrency"), list(itertools.product((1, 3, 5), (0, 1, 4), (1, 2, 3)))
)
def test_servers_one_at_a_time_then_agents_bounded(servers: int, agents: int, concurrency: int) -> None:
    nodes = cluster(servers, agents)
    batches = simulate(nodes, B, Policy(agent_concurrency=concurrency))
    flat = [n for b in batches for n in b]
    assert sorted(flat) == sorted(n.name for n in nodes)  # every node exactly once
    assert len(flat) == len(set(flat))
    server_batches = [b for b in batches if b[0].startswith("s")]
    assert all(len(b) == 1 for b in server_batches)
    assert batches[: len(server_batches)] == server_batches  # servers before any agent
    assert all(1 <= len(b) <= concurrency for b in batches[len(server_batches) :])
    assert all(all(n.startswith("a") for n in b) for b in batches[len(server_batches) :])


def test_nothing_to_do_reports_none_not_a_rollout() -> None:
    nodes = cluster()
    progress = upgrade.begin(Progress(), nodes, A, now="t")
    assert progress == Progress()
    assert upgrade.next_step(nodes, A, progress, Policy()).kind == "none"


def test_nodes_without_k3s_are_left_to_the_bootstrap() -> None:
    nodes = [*cluster(1, 0, B), NodeState("a0", "agent", None)]
    assert upgrade.pending(nodes, B) == []


def test_in_flight_nodes_finish_first_and_never_two_servers() -> None:
    nodes = cluster()
    # A crash left s1 in flight (maybe upgraded already, maybe not): s1 is finished before s0 starts.
    progress = Progress(to_version=B, state=upgrade.PROGRESSING, current=("s1",), completed=())
    assert upgrade.next_step(nodes, B, progress, Policy()).nodes == ("s1",)
    # A corrupt record with two servers in flight still yields one server at a time.
    progress = Progress(to_version=B, state=upgrade.PROGRESSING, current=("s1", "s2"))
    assert upgrade.next_step(nodes, B, progress, Policy()).nodes == ("s1",)
    # Resuming agents keeps their batch.
    done = [NodeState(n.name, n.role, B if n.role == "server" else A) for n in nodes]
    progress = Progress(to_version=B, state=upgrade.PROGRESSING, current=("a0", "a1"))
    assert upgrade.next_step(done, B, progress, Policy()).nodes == ("a0", "a1")


def test_node_already_at_target_is_not_picked_again() -> None:
    nodes = [NodeState("s0", "server", B), NodeState("s1", "server", A), NodeState("s2", "server", A)]
    progress = upgrade.begin(Progress(), nodes, B, now="t")
    assert upgrade.next_step(nodes, B, progress, Policy()).nodes == ("s1",)


def test_paused_stops_between_batches_but_finishes_in_flight() -> None:
    nodes = cluster()
    progress = upgrade.begin(Progress(), nodes, B, now="t")
    assert upgrade.next_step(nodes, B, progress, Policy(paused=True)).kind == "paused"
    flying = Progress(to_version=B, state=upgrade.PROGRESSING, current=("s0",))
    assert upgrade.next_step(nodes, B, flying, Policy(paused=True)).nodes == ("s0",)


def test_failed_rollout_stays_stopped_until_retried() -> None:
    nodes = cluster()
    failed = Progress(to_version=B, state=upgrade.FAILED, failed_node="s1", completed=("s0",))
    step = upgrade.next_step(nodes, B, failed, Policy())
    assert step.kind == "failed" and step.nodes == ("s1",) and "s1" in step.message
    assert upgrade.next_step(nodes, B, failed, Policy(retry_failed=True)).kind == "upgrade"


def test_server_waits_for_the_other_servers_to_be_ready() -> None:
    nodes = [
        NodeState("s0", "server", A),
        NodeState("s1", "server", A, ready=False),
        NodeState("s2", "server", B),
    ]
    progress = upgrade.begin(Progress(), nodes, B, now="t")
    step = upgrade.next_step(nodes, B, progress, Policy())
    assert step.kind == "wait" and "s1" in step.message


def test_new_target_restarts_the_record_but_keeps_in_flight() -> None:
    nodes = cluster()
    old = Progress(to_version=B, state=upgrade.PROGRESSING, current=("s2",), completed=("s0", "s1"))
    new = upgrade.begin(old, nodes, C, now="t1")
    assert (new.to_version, new.completed, new.current, new.from_version) == (C, (), ("s2",), A)
    assert upgrade.next_step(nodes, C, new, Policy()).nodes == ("s2",)


def test_done_is_reported_once_per_rollout() -> None:
    nodes = cluster(version=B)
    progress = Progress(to_version=B, state=upgrade.PROGRESSING, completed=("s0",))
    assert upgrade.next_step(nodes, B, progress, Policy()).kind == "done"
    complete = Progress(to_version=B, state=upgrade.COMPLETE)
    assert upgrade.next_step(nodes, B, complete, Policy()).kind == "none"


def test_progress_round_trips_through_status() -> None:
    p = Progress(
        to_version=B,
        from_version=A,
        state="Progressing",
        current=("s0",),
        completed=("a1",),
        started_time="t",
    )
    assert Progress.from_status(p.as_status()) == p


def test_target_version() -> None:
    assert upgrade.target_version(pinned=B, channel_version=C, auto_upgrade=False) == B
    assert upgrade.target_version(pinned=None, channel_version=C, auto_upgrade=True) == C
    assert upgrade.target_version(pinned=None, channel_version=C, auto_upgrade=False) is None


# --- scale-down -----------------------------------------------------------------------------------


def test_agents_leave_before_servers_highest_index_first() -> None:
    surplus = [
        scaling.Surplus("c-server-3", "server"),
        scaling.Surplus("c-agent-1", "agent"),
        scaling.Surplus("c-server-4", "server"),
        scaling.Surplus("c-agent-2", "agent"),
    ]
    assert [s.name for s in scaling.order(surplus)] == ["c-agent-2", "c-agent-1", "c-server-4", "c-server-3"]
    first = scaling.next_removal(surplus, staying_servers={"c-server-0": False})
    assert first.node is not None and first.node.name == "c-agent-2"  # agents need no quorum check


def test_a_server_leaves_only_while_every_staying_server_is_ready() -> None:
    surplus = [scaling.Surplus("c-server-4", "server"), scaling.Surplus("c-server-3", "server")]
    ok = scaling.next_removal(
        surplus, staying_servers={"c-server-0": True, "c-server-1": True, "c-server-2": True}
    )
    assert ok.node is not None and ok.node.name == "c-server-4"
    held = scaling.next_removal(surplus, staying_servers={"c-server-0": True, "c-server-1": False})
    assert held.node is None and "c-server-1" in held.message
    alone = scaling.next_removal(surplus, staying_servers={})
    assert alone.node is None and "no other server" in alone.message
    assert scaling.next_removal([], staying_servers={}).node is None


def test_init_server_is_not_special_once_formed() -> None:
    assert scaling.next_anchor("s0", "s0", ["s0", "s1", "s2"]) == "s1"
    assert scaling.next_anchor("s0", "s2", ["s0", "s1", "s2"]) == "s0"


# --- power ----------------------------------------------------------------------------------------


def kids(
    server_state: str | None, agent_state: str | None, *, wanted: str = "Running"
) -> list[power.ChildPower]:
    return [
        power.ChildPower("s0", "server", wanted, server_state, ready=server_state == "Running"),
        power.ChildPower("s1", "server", wanted, server_state, ready=server_state == "Running"),
        power.ChildPower("a0", "agent", wanted, agent_state, ready=agent_state == "Running"),
    ]


def test_stop_agents_first_then_servers() -> None:
    p = power.plan("Stopped", kids("Running", "Running"))
    assert p.states == {"s0": "Running", "s1": "Running", "a0": "Stopped"} and not p.settled
    p = power.plan("Stopped", kids("Running", "Stopped"))
    assert p.states == {"s0": "Stopped", "s1": "Stopped", "a0": "Stopped"} and not p.settled
    p = power.plan("Stopped", kids("Stopped", "Stopped", wanted="Stopped"))
    assert p.settled


def test_start_servers_first_then_agents() -> None:
    p = power.plan("Running", kids("Stopped", "Stopped", wanted="Stopped"))
    assert p.states == {"s0": "Running", "s1": "Running", "a0": "Stopped"} and not p.settled
    p = power.plan("Running", kids("Running", "Stopped", wanted="Stopped"))
    assert p.states == {"s0": "Running", "s1": "Running", "a0": "Running"} and p.settled


def test_new_children_follow_the_cluster_state() -> None:
    fresh = [power.ChildPower("s0", "server", None, None), power.ChildPower("a0", "agent", None, None)]
    assert power.plan("Running", fresh).states == {"s0": "Running", "a0": "Running"}
    assert power.plan("Stopped", fresh).states == {"s0": "Stopped", "a0": "Stopped"}
