"""The restore's long steps as detached guest jobs (:mod:`guest_jobs`), never awaited inside a pass.

``k3s server --cluster-reset`` (minutes on a large datastore) and each ``systemctl start k3s`` of a
restore run detached on the guest, so a pass that meets them ends at once and ``spec.paused``, a spec
edit or a deletion is seen on the next one. A pass looks at the step's job once: still running, NotYet
paced by the step's age; ended with 0, the step is done; any other exit, ``RestoreStepFailed`` with the
job's log tail; not on the guest, it is started. The job id names the work (requestId, step, node), so
a pass after an operator kill or a lost status finds the job instead of running it a second time; the
files stay until the restore is recorded done in the token Secret (:func:`clean`).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from k3s_deploy import errors
from k3s_deploy.api.etcd_snapshots import EtcdRestoreStatus
from k3s_deploy.services.cadence import JOB_FLOOR, JOB_FRACTION, next_look
from k3s_deploy.services.k3scluster import access, guest_jobs
from k3s_deploy.services.k3scluster.node_ops import POLL_S
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView

RESET, START, REJOIN = "reset", "start", "rejoin"
IN_FLIGHT = "RestoreJobInFlight"  # the NotYet of a step's job that has not ended
TIMED_OUT = "RestoreStepTimedOut"  # stalls the restore at its step; a later look may still see the end


def job_of(request_id: str, work: str, node: str) -> str:
    """The job id of one step of one restore on one node: the work, not the attempt."""
    return guest_jobs.job_id("restore", request_id, work, node)


def elapsed(cur: EtcdRestoreStatus) -> float:
    """Seconds since the current step began."""
    since = cur.step_started_time
    return (datetime.now(UTC) - since).total_seconds() if since is not None else 0.0


async def look(r: ClusterPass, view: NodeView, key: str, job: str) -> guest_jobs.JobState:
    target = access.node_target(r, view, key)
    return await guest_jobs.poll(r.deps.ssh, target, job, timeout_s=float(r.spec.ssh.command_timeout_seconds))


async def run(
    r: ClusterPass,
    cur: EtcdRestoreStatus,
    view: NodeView,
    key: str,
    work: str,
    script: str | None,
    what: str,
    limit_s: float,
) -> None:
    """Returns once the step's job on ``view`` ended with exit 0; else starts it (``script``; None: the
    job must be there already) or looks at it once and raises NotYet. Exit != 0: ``RestoreStepFailed``;
    not ended ``limit_s`` after the step began: ``RestoreStepTimedOut``, the restore stalls at the step
    (nothing kills a reset half-way; later looks still see its end)."""
    job = job_of(cur.request_id, work, view.name)
    state = await look(r, view, key, job)
    said = "running"
    if state.rc is None and not state.running:
        if script is None:
            raise errors.PermanentError(
                f"node {view.name}: the {what} job is gone and the snapshot path was lost with the "
                "status; set a new requestId to restore again",
                reason="RestoreStepFailed",
            )
        target = access.node_target(r, view, key)
        timeout = float(r.spec.ssh.command_timeout_seconds)
        said = await guest_jobs.start(r.deps.ssh, target, job, script, timeout_s=timeout)
        if said != "busy":
            state = await look(r, view, key, job)  # a quick job may have ended already
    if state.rc is None:
        waited = elapsed(cur)
        if waited >= limit_s:
            doing = "still running" if said != "busy" else "not started (another job runs there)"
            raise errors.PermanentError(
                f"node {view.name}: {what} {doing} {limit_s:.0f} s after the step began; see "
                f"{guest_jobs.JOB_DIR}/{job}.log on the node (the restore goes on if it ends well)",
                reason=TIMED_OUT,
            )
        doing = "waits for another job on the node" if said == "busy" else "in progress"
        after = next_look(waited, floor=JOB_FLOOR, fraction=JOB_FRACTION, cap=POLL_S)
        raise errors.NotYet(after, IN_FLIGHT, f"{what} on {view.name} {doing}")
    if state.rc != 0:
        raise errors.CommandFailed(
            f"node {view.name}: {what} failed (exit {state.rc}): {state.tail or 'no output'}",
            exit_status=state.rc,
            reason="RestoreStepFailed",
        )


async def clean(r: ClusterPass, request_id: str, servers: list[NodeView], key: str) -> None:
    """Drop a finished restore's job files (``servers``: the init server first). Best effort: files
    left on an unreachable server are a few bytes and never read again (the next restore's ids differ)."""
    for i, view in enumerate(servers):
        for work in (RESET, START) if i == 0 else (REJOIN,):
            target = access.node_target(r, view, key)
            timeout = float(r.spec.ssh.command_timeout_seconds)
            with contextlib.suppress(errors.TransientError):
                await guest_jobs.clean(
                    r.deps.ssh, target, job_of(request_id, work, view.name), timeout_s=timeout
                )
