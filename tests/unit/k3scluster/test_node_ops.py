"""Long node work recorded in status, never awaited in a pass (node_ops.py, issue 16 step 4): a drain
spread over passes, a WaitReady timeout, an installer whose exit code arrives on a later pass, and an
operator restarted (or its status lost) between the start and the exit code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from k3s_deploy.ports.target import TargetPod
from k3s_deploy.services.cadence import JOB_FLOOR
from k3s_deploy.services.k3scluster import guest_jobs, node_ops

from .day2_world import B, Target, World, body, bump, cond
from .test_day2_reconcile import ready_cluster, upgrade_to


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(node_ops, "_now", c)
    return c


class Budgeted(Target):
    """One managed pod on demo-server-0 whose eviction a budget refuses ``refusals`` times; once
    evicted it terminates for one more look, then it is gone."""

    def __init__(self, w: World, refusals: int) -> None:
        super().__init__(w.ssh, w.ops)
        self.refusals = refusals
        self.state = "running"

    async def pods_on(self, kubeconfig: str, node: str) -> list[TargetPod]:
        self.ops.append(("drain", node))
        if node != "demo-server-0" or self.state == "gone":
            return []
        terminating = self.state == "terminating"
        if terminating:
            self.state = "gone"
        return [TargetPod("default", "web", node, "ReplicaSet", terminating=terminating)]

    async def evict(self, kubeconfig: str, namespace: str, name: str) -> bool:
        self.ops.append(("evict", name))
        if self.refusals > 0:
            self.refusals -= 1
            return False
        self.state = "terminating"
        return True


def operation(out: Any, node: str) -> dict[str, Any] | None:
    entry = next(n for n in out.status["nodes"] if n["name"] == node)
    op: dict[str, Any] | None = entry.get("operation")
    return op


async def one_server(w_spec: dict[str, Any] | None = None) -> tuple[World, dict[str, Any]]:
    return await ready_cluster(1, 0, **(w_spec or {}))


async def test_a_drain_is_spread_over_passes_and_each_pass_returns(clock: Clock) -> None:
    w, b = await one_server()
    w.target = w.deps.target = Budgeted(w, refusals=2)
    upgrade_to(b, B)
    first = await w.pass_(b)
    assert first.requeue_after == node_ops.POLL_S and first.error is None
    op = operation(first, "demo-server-0")
    assert op is not None and op["kind"] == "Drain" and op["action"] == "Upgrade" and op["target"] == B
    assert "demo-server-0" in w.target.cordoned and w.of("install") == []
    second = await w.pass_(b)  # refused again: still draining, nothing installed
    assert operation(second, "demo-server-0")["kind"] == "Drain"  # type: ignore[index]
    assert w.of("evict") == ["web", "web"] and w.of("install") == []
    third = await w.pass_(b)  # the budget allows it: evicted, now terminating
    assert operation(third, "demo-server-0")["evicted"] == 1  # type: ignore[index]
    assert w.of("install") == []
    out = await w.settle(b)  # gone: the upgrade runs, the node is uncordoned
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    assert w.of("install") == ["demo-server-0"] and not w.target.cordoned
    assert operation(out, "demo-server-0") is None
    # five rounds, one per pass: refused, refused, evicted, still terminating, gone (cordon is idempotent)
    assert w.of("cordon") == ["demo-server-0"] * 5 and len(w.of("drain")) >= 5


async def test_a_drain_that_outlives_its_timeout_fails_the_rollout(clock: Clock) -> None:
    w, b = await one_server({"upgrade": {"drain": {"timeoutSeconds": 30}}})
    w.target = w.deps.target = Budgeted(w, refusals=1000)
    upgrade_to(b, B)
    assert (await w.pass_(b)).requeue_after == node_ops.POLL_S
    clock.tick(31)
    out = await w.pass_(b)
    stalled = cond(out, "Stalled")
    assert stalled["reason"] == "UpgradeFailed" and "still refused after 30s" in stalled["message"]
    assert operation(out, "demo-server-0") is None and w.of("install") == []


async def test_wait_ready_times_out_from_its_recorded_start(clock: Clock) -> None:
    w, b = await one_server({"upgrade": {"nodeReadyTimeoutSeconds": 60}})
    upgrade_to(b, B)
    w.target.not_ready.add("demo-server-0")
    out = await w.pass_(b)  # drained, installed, now waiting for Ready
    op = operation(out, "demo-server-0")
    assert op is not None and op["kind"] == "WaitReady" and op["timeoutSeconds"] == 60
    assert out.requeue_after == JOB_FLOOR and w.of("install") == ["demo-server-0"]  # just started: soon
    clock.tick(30)
    later = await w.pass_(b)
    assert operation(later, "demo-server-0")["kind"] == "WaitReady"  # type: ignore[index]
    assert later.requeue_after == node_ops.POLL_S  # 30 s of waiting: at the cap
    clock.tick(31)
    failed = await w.pass_(b)
    stalled = cond(failed, "Stalled")
    assert stalled["reason"] == "UpgradeFailed"
    assert "was not Ready at" in stalled["message"] and "within 60s" in stalled["message"]
    assert w.of("install") == ["demo-server-0"]


async def test_the_installers_exit_code_arrives_on_a_later_pass(clock: Clock) -> None:
    w, b = await one_server()
    w.ssh.hold_jobs = True
    upgrade_to(b, B)
    passes = []
    for tick in (0, 10, 20):  # looks at a job 0, 10 and 30 s old: the next after a tenth of its age
        clock.tick(tick)
        passes.append(await w.pass_(b))
    assert [out.requeue_after for out in passes] == [JOB_FLOOR, 1.0, node_ops.POLL_S]
    for out in passes:
        op = operation(out, "demo-server-0")
        assert op is not None and op["kind"] == "Upgrade" and op["job"], op
        assert out.error is None
    starts = [job for _, job in w.ssh.job_starts if job.startswith("upgrade")]
    assert len(starts) == 1 and w.of("install") == []
    w.ssh.hold_jobs = False  # the installer ends on the guest
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and out.status["k3sVersion"] == B
    assert w.of("install") == ["demo-server-0"] and operation(out, "demo-server-0") is None
    assert not next(iter(w.ssh.hosts.values())).jobs  # the job's files were removed once read


@pytest.mark.parametrize(
    ("seconds", "looks"),
    [(2, 4), (10, 18), (40, 35), (120, 75)],  # at a fixed POLL_S: 1, 5, 20, 60 looks, each up to 2 s late
)
async def test_a_jobs_looks_are_paced_by_its_age(clock: Clock, seconds: int, looks: int) -> None:
    """On a simulated clock, each pass asks for the next look and the clock moves on by that: a job of
    ``seconds`` costs ``looks`` passes after its start, its end is seen at most a tenth of its duration
    late (0.5 s at least, POLL_S at most), and the looks never come more than POLL_S apart."""
    w, b = await one_server()
    w.ssh.hold_jobs = True
    upgrade_to(b, B)
    out = await w.pass_(b)  # drained (nothing on the node), the installer started as a job: its age 0
    assert operation(out, "demo-server-0")["kind"] == "Upgrade"  # type: ignore[index]
    waited, count, gaps = 0.0, 0, []
    while (operation(out, "demo-server-0") or {}).get("kind") == "Upgrade":
        assert out.requeue_after is not None and out.error is None
        gaps.append(out.requeue_after)
        clock.tick(out.requeue_after)
        waited += out.requeue_after
        w.ssh.hold_jobs = waited < seconds  # the installer ends on the guest after ``seconds``
        out = await w.pass_(b)
        count += 1
    assert count == looks, gaps
    assert waited - seconds <= max(JOB_FLOOR, min(node_ops.POLL_S, seconds / 10))
    assert min(gaps) == JOB_FLOOR and max(gaps) <= node_ops.POLL_S
    assert gaps == sorted(gaps)  # never sooner than the look before: the older the job, the rarer
    assert w.of("install") == ["demo-server-0"]


@pytest.mark.parametrize("status_lost", [False, True])
async def test_an_operator_restarted_mid_install_starts_no_second_install(
    clock: Clock, status_lost: bool
) -> None:
    w, b = await one_server()
    w.ssh.hold_jobs = True
    upgrade_to(b, B)
    await w.pass_(b)
    # a new operator process: it has only what status recorded (or nothing, when status was lost)
    fresh = World()
    fresh.objects, fresh.ssh, fresh.target, fresh.ops = w.objects, w.ssh, w.target, w.ops
    fresh.deps = w.deps
    if status_lost:
        for node in b["status"]["nodes"]:
            node.pop("operation", None)
        b["status"].pop("upgrade", None)
        bump(b)
    again = await fresh.pass_(b)
    assert again.error is None and again.requeue_after == JOB_FLOOR  # a young job: looked at soon
    assert operation(again, "demo-server-0")["kind"] == "Upgrade"  # type: ignore[index]
    starts = [job for _, job in w.ssh.job_starts if job.startswith("upgrade")]
    assert len(starts) == 1, starts  # the job on the guest is found, not started twice
    w.ssh.hold_jobs = False
    out = await fresh.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    assert w.of("install") == ["demo-server-0"]


async def test_paused_mid_install_finishes_that_node_and_starts_no_other(clock: Clock) -> None:
    w, b = await ready_cluster(3, 0)
    w.ssh.hold_jobs = True
    upgrade_to(b, B)
    await w.pass_(b)
    b["spec"]["paused"] = True
    bump(b)
    paused = await w.pass_(b)  # takes effect at once: phase Paused, the installer still runs
    assert paused.status["phase"] == "Paused" and paused.requeue_after == JOB_FLOOR
    assert operation(paused, "demo-server-0")["kind"] == "Upgrade"  # type: ignore[index]
    assert paused.status["upgrade"]["state"] == "Progressing"  # not halted yet: a node is in flight
    w.ssh.hold_jobs = False
    done = await w.pass_(b)  # the node in flight is finished (Ready, uncordoned), the rollout halts
    assert done.status["phase"] == "Paused" and done.requeue_after is None
    assert done.status["upgrade"]["state"] == "Paused"
    assert done.status["upgrade"]["completedNodes"] == ["demo-server-0"]
    assert operation(done, "demo-server-0") is None and not w.target.cordoned
    for _ in range(3):
        await w.pass_(b)
    assert w.of("install") == ["demo-server-0"] and w.of("cordon") == ["demo-server-0"]
    b["spec"]["paused"] = False
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and w.of("install") == [
        f"demo-server-{i}" for i in range(3)
    ]


async def test_a_first_install_is_a_guest_job_looked_at_on_later_passes(clock: Clock) -> None:
    w, b = World(), body(1, 1)
    w.ssh.hold_jobs = True
    await w.pass_(b)
    w.boot()
    for tick, after in ((0, JOB_FLOOR), (10, 1.0), (20, node_ops.POLL_S)):
        clock.tick(tick)  # the init server's installer runs: each pass looks once and returns
        out = await w.pass_(b)
        assert out.requeue_after == after and out.error is None  # paced by the job's age
        op = operation(out, "demo-server-0")
        assert op is not None and op["kind"] == "Install" and op["job"].startswith("install-demo-server-0")
        assert out.status["phase"] == "Bootstrapping"
    assert [job for _, job in w.ssh.job_starts] == [op["job"]]  # once; the agent waits for the server
    # an operator restarted with its status lost: the job on the guest is found, not started again
    for node in b["status"]["nodes"]:
        node.pop("operation", None)
    assert operation(await w.pass_(b), "demo-server-0")["kind"] == "Install"  # type: ignore[index]
    assert len(w.ssh.job_starts) == 1
    w.ssh.hold_jobs = False
    ready = await w.settle(b)
    assert cond(ready, "Ready")["status"] == "True", ready.status["conditions"]
    assert w.of("install") == ["demo-server-0", "demo-agent-0"]
    assert all(n.get("operation") is None for n in ready.status["nodes"])
    assert not any(host.jobs for host in w.ssh.hosts.values())  # every exit code read, every file gone


class LeavingPod(Budgeted):
    """Budgeted's pod, on the agent a scale-down removes."""

    def __init__(self, w: World, refusals: int, node: str) -> None:
        super().__init__(w, refusals)
        self.node = node

    async def pods_on(self, kubeconfig: str, node: str) -> list[TargetPod]:
        if node != self.node:
            self.ops.append(("drain", node))
            return []
        return await super().pods_on(kubeconfig, "demo-server-0")


async def test_a_scale_down_drain_is_recorded_and_a_pause_is_seen_between_rounds(clock: Clock) -> None:
    w, b = await ready_cluster(1, 2)
    w.target = w.deps.target = LeavingPod(w, refusals=2, node="demo-agent-1")
    b["spec"]["agents"]["replicas"] = 1
    bump(b)
    first = await w.pass_(b)
    assert first.requeue_after == node_ops.POLL_S and first.error is None
    op = operation(first, "demo-agent-1")
    assert op is not None and op["kind"] == "Drain" and op["action"] == "Remove"
    assert next(n for n in first.status["nodes"] if n["name"] == "demo-agent-1")["state"] == "Removing"
    assert w.objects.deleted_children == [] and "demo-agent-1" in w.target.cordoned
    b["spec"]["paused"] = True  # seen at the next pass, not after the drain
    bump(b)
    paused = await w.pass_(b)
    assert paused.status["phase"] == "Paused"
    evictions = w.of("evict")
    clock.tick(5)
    await w.pass_(b)
    assert w.of("evict") == evictions and w.objects.deleted_children == []
    b["spec"]["paused"] = False
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    assert w.objects.deleted_children == ["demo-agent-1"]
    mine = [o for o, n in w.ops if n == "demo-agent-1"]
    assert mine[-2:] == ["delete-node", "uninstall"] and w.of("evict") == ["web"] * 3


async def test_between_whole_passes_a_look_at_a_running_job_is_one_ssh_command(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """job_look.py: within POLL_S of a whole pass, a look at a running installer asks the guest only
    for the job's state (no probe of every member, no read of the cluster's nodes); a whole pass still
    runs every POLL_S, and at once when the job has ended."""
    w, b, calls = await _upgrade_held(monkeypatch)
    first = await w.pass_(b)  # whole: drained, the job started
    assert operation(first, "demo-server-0")["kind"] == "Upgrade"  # type: ignore[index]
    whole = len(calls)
    clock.tick(first.requeue_after or 0)
    look = await w.pass_(b)
    assert [c for _, c in calls[whole:]] == ["poll"]  # one command: the job's state
    assert look.requeue_after == JOB_FLOOR and look.status == first.status
    clock.tick(node_ops.POLL_S)  # no whole pass for POLL_S: the next look is one
    seen = len(calls)
    assert (await w.pass_(b)).requeue_after == JOB_FLOOR and len(calls) - seen > 1
    w.ssh.hold_jobs = False  # the installer ends: the next look sees it and the whole pass moves on
    clock.tick(JOB_FLOOR)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and out.status["k3sVersion"] == B
    assert w.of("install") == ["demo-server-0"] and operation(out, "demo-server-0") is None


async def test_a_look_between_whole_passes_never_dials_an_address_read_from_status(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Status is writable by the cluster's author: an address put there between passes is not dialled
    by the look; the whole pass runs and works from the addresses it verifies itself."""
    w, b, calls = await _upgrade_held(monkeypatch)
    first = await w.pass_(b)
    assert operation(first, "demo-server-0")["kind"] == "Upgrade"  # type: ignore[index]
    real = b["status"]["nodes"][0]["ip"]
    b["status"]["nodes"][0]["ip"] = "169.254.169.254"
    seen = len(calls)
    clock.tick(first.requeue_after or 0)
    await w.pass_(b)
    hosts = [h for h, _ in calls]
    assert "169.254.169.254" not in hosts
    assert len(hosts) - seen > 1 and real in hosts[seen:]  # the whole pass ran, on the verified address


async def _upgrade_held(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Any], list[tuple[str, str]]]:
    """One Ready server asked to upgrade, its installer held running; every SSH command recorded as
    (host, "poll" or the command's start)."""
    w, b = await one_server()
    w.ssh.hold_jobs = True
    upgrade_to(b, B)
    calls: list[tuple[str, str]] = []
    run = w.ssh.run

    async def counted(target: Any, command: str, **kwargs: Any) -> Any:
        calls.append((target.host, "poll" if command.startswith(guest_jobs.POLL_PREFIX) else command[:30]))
        return await run(target, command, **kwargs)

    monkeypatch.setattr(w.ssh, "run", counted)
    return w, b, calls
