"""The restore's long steps as detached guest jobs: a pass during the cluster-reset looks at its job
once and ends (no wait), the step moves on only on exit 0, a failure carries the job's log tail, an
operator restarted (or a status lost) mid-reset finds the job instead of resetting twice, a pause is
seen on the next pass, and a reset running past its timeout stalls the restore at the step."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from k3s_deploy.services.k3scluster import guest_jobs, node_ops, restore, restore_jobs, snapshots

from .test_etcd_snapshots import SnapSsh, _ready_world
from .test_reconcile import World

RESET_JOB = restore_jobs.job_of("r1", restore_jobs.RESET, "demo-server-0")


class LoggingSsh(SnapSsh):
    """SnapSsh that also keeps every command line (the job looks and starts included)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    async def run(self, target: Any, command: str, *, input: str | None = None, **kw: Any) -> Any:
        self.lines.append(command)
        return await super().run(target, command, input=input, **kw)


def step(body: dict[str, Any]) -> str:
    return str(body["status"]["etcdRestore"]["step"])


def resets(ssh: SnapSsh) -> list[str]:
    """cluster-reset runs (the fake runs a job's script once, when it ends)."""
    return [c for _, c, _ in ssh.commands if c.startswith("k3s server --cluster-reset")]


def restore_lines(ssh: LoggingSsh) -> list[str]:
    """The restore's own commands: its job looks and starts, and the steps run directly."""
    return [
        c
        for c in ssh.lines
        if "restore-r1-" in c or c.startswith(("systemctl", "k3s server", "rm -rf", "k3s etcd-snapshot ls"))
    ]


async def resetting() -> tuple[World, dict[str, Any], LoggingSsh]:
    """A 3+1 cluster whose restore r1 has its cluster-reset job started and held running."""
    w, body, ssh = await _ready_world(ssh=LoggingSsh())
    assert isinstance(ssh, LoggingSsh)
    body["metadata"]["annotations"] = {snapshots.SNAPSHOT_REQUEST: "pre"}
    await w.pass_(body)
    name = body["status"]["etcdSnapshots"][0]["name"]
    body["spec"]["etcdSnapshots"]["restore"] = {"name": name, "requestId": "r1"}
    ssh.hold_jobs = True
    ssh.job_starts.clear()
    for _ in range(5):
        out = await w.pass_(body)
        if ssh.job_starts:
            assert out.error is None and step(body) == "Resetting", out.error
            assert ssh.job_starts == [("10.0.0.10", RESET_JOB)]
            return w, body, ssh
    raise AssertionError(f"the reset job never started: {body['status'].get('etcdRestore')}")


async def settle(w: World, body: dict[str, Any]) -> None:
    for _ in range(15):
        await w.pass_(body)
        if step(body) in ("Complete", "Failed"):
            return
    raise AssertionError(f"the restore did not end: {body['status']['etcdRestore']}")


async def test_a_pass_during_the_reset_looks_at_its_job_once_and_returns() -> None:
    w, body, ssh = await resetting()
    ssh.lines.clear()
    began = time.perf_counter()
    out = await w.pass_(body)
    assert time.perf_counter() - began < 1.0
    assert out.error is None and 0 < (out.requeue_after or 0) <= node_ops.POLL_S
    assert restore_lines(ssh) == [guest_jobs.POLL_PREFIX + RESET_JOB]  # one look, nothing started
    assert step(body) == "Resetting" and out.status["phase"] == "Restoring"
    assert "cluster-reset on demo-server-0 in progress" in str(out.status["conditions"])
    assert not resets(ssh) and len(ssh.job_starts) == 1


async def test_a_reset_that_ends_with_0_moves_to_starting_init_and_the_restore_completes() -> None:
    w, body, ssh = await resetting()
    ssh.hold_jobs = False  # the reset ends on the guest
    out = await w.pass_(body)
    assert out.error is None and step(body) == "StartingInit"
    assert "ClusterReset" in [e.reason for e in out.events] and len(resets(ssh)) == 1
    assert body["status"]["etcdRestore"]["stepStartedTime"]
    await settle(w, body)
    assert step(body) == "Complete" and len(resets(ssh)) == 1
    started = [job for _, job in ssh.job_starts]
    assert started == [
        RESET_JOB,
        restore_jobs.job_of("r1", restore_jobs.START, "demo-server-0"),
        restore_jobs.job_of("r1", restore_jobs.REJOIN, "demo-server-1"),
        restore_jobs.job_of("r1", restore_jobs.REJOIN, "demo-server-2"),
    ]
    assert all(not host.jobs for host in ssh.hosts.values())  # the files go once it is recorded done


async def test_a_reset_that_exits_non_zero_fails_the_restore_with_the_job_tail() -> None:
    w, body, ssh = await resetting()
    ssh.fail["k3s server --cluster-reset"] = 1
    ssh.hold_jobs = False
    out = await w.pass_(body)
    assert out.error is not None and out.error.reason == "RestoreStepFailed"
    assert "cluster-reset failed (exit 1): FATA boom" in out.error.message
    assert step(body) == "Failed" and "FATA boom" in body["status"]["etcdRestore"]["message"]
    await w.pass_(body)
    assert len(ssh.job_starts) == 1 and len(resets(ssh)) == 1  # a failed restore is not run again


async def test_an_operator_restarted_mid_reset_finds_the_job_and_never_resets_twice() -> None:
    w, body, ssh = await resetting()
    w.deps = dataclasses.replace(w.deps, whole_passes={})  # a new process: nothing in memory
    out = await w.pass_(body)
    assert out.error is None and step(body) == "Resetting" and len(ssh.job_starts) == 1
    body["status"].pop("etcdRestore")  # and the restore's record lost with it
    out = await w.pass_(body)
    assert out.error is None and step(body) == "Resetting", body["status"]["etcdRestore"]
    assert len(ssh.job_starts) == 1
    assert not [c for _, c, _ in ssh.commands if c == "systemctl stop k3s"][3:]  # no second stop
    ssh.hold_jobs = False
    await settle(w, body)
    assert step(body) == "Complete" and len(resets(ssh)) == 1
    assert [job for _, job in ssh.job_starts].count(RESET_JOB) == 1


async def test_a_pause_during_the_reset_is_seen_on_the_next_pass() -> None:
    w, body, ssh = await resetting()
    body["spec"]["paused"] = True
    body["metadata"]["generation"] += 1
    ssh.lines.clear()
    out = await w.pass_(body)
    assert out.status["phase"] == "Paused" and out.error is None
    assert not restore_lines(ssh) and step(body) == "Resetting"  # the record stays for the resume
    ssh.hold_jobs = False  # the reset ends on the guest while the cluster is paused
    body["spec"]["paused"] = False
    body["metadata"]["generation"] += 1
    await settle(w, body)
    assert step(body) == "Complete" and len(resets(ssh)) == 1 and len(ssh.job_starts) == 4


async def test_a_reset_past_its_timeout_stalls_at_the_step_and_goes_on_when_it_ends() -> None:
    w, body, ssh = await resetting()
    late = datetime.now(UTC) - timedelta(seconds=restore.RESET_TIMEOUT_S + 5)
    body["status"]["etcdRestore"]["stepStartedTime"] = late.isoformat()
    out = await w.pass_(body)
    assert out.error is not None and out.error.reason == restore_jobs.TIMED_OUT
    assert f"{guest_jobs.JOB_DIR}/{RESET_JOB}.log" in out.error.message
    assert out.status["phase"] == "Stalled" and step(body) == "Resetting"
    ssh.hold_jobs = False
    out = await w.pass_(body)
    assert out.error is None and step(body) == "StartingInit" and len(resets(ssh)) == 1


async def test_a_record_from_before_steps_were_timed_gets_its_step_timed_from_now() -> None:
    w, body, ssh = await _ready_world(ssh=LoggingSsh())
    body["spec"]["etcdSnapshots"]["restore"] = {"name": "pre-node-1", "requestId": "r1"}
    body["status"]["etcdRestore"] = {  # an operator without the jobs was killed in the reset
        "requestId": "r1",
        "name": "pre-node-1",
        "step": "Resetting",
        "path": "/var/lib/rancher/k3s/server/db/snapshots/pre-node-1",
        "startedTime": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    }
    ssh.hold_jobs = True
    ssh.job_starts.clear()
    out = await w.pass_(body)
    assert out.error is None and step(body) == "Resetting" and ssh.job_starts == [("10.0.0.10", RESET_JOB)]
    assert body["status"]["etcdRestore"]["stepStartedTime"]  # not timed out by the hour-old request
