"""Restore from an etcd snapshot, the way K3s documents it, driven from spec.etcdSnapshots.restore.

1. stop K3s on every server; 2. on the init server run ``k3s server --cluster-reset
--cluster-reset-restore-path=<file>``; 3. start K3s there; 4. on each other server remove
``/var/lib/rancher/k3s/server/db`` and start K3s (it rejoins); 5. restart the agents; 6. wait for Ready.

One step per pass: each is recorded in status.etcdRestore before the next one starts, so an operator
restarted mid-restore goes on at the step it was at. The long ones (the reset, each server's start)
are detached guest jobs (:mod:`restore_jobs`) named after the request, step and node: a pass starts
one or looks at it once and ends, so spec.paused, a spec edit or a deletion is seen within seconds,
and a job is found again (never run twice) after an operator kill or a lost status. The wait for
Ready is looked at again each pass too.
A restore runs once per requestId; the last one done is also kept in ``<cluster>-token``, so a lost
status (a backup restore, a move) never rolls the cluster back again.
"""

from __future__ import annotations

import asyncio
import shlex
from datetime import UTC, datetime
from typing import NoReturn

from k3s_deploy import errors
from k3s_deploy.api.etcd_snapshots import EtcdRestoreStatus
from k3s_deploy.ports.ssh import guest_text
from k3s_deploy.services.cluster_identity import token_secret_name
from k3s_deploy.services.k3scluster import access, restore_jobs, snapshots
from k3s_deploy.services.k3scluster.secrets import managed_labels
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView

RESTORED = "EtcdRestored"
DB_DIR = "/var/lib/rancher/k3s/server/db"
RESET_TIMEOUT_S = 600.0
START_TIMEOUT_S = 300.0
DONE = ("Complete", "Failed")
RESTORED_KEY = "etcdRestoredRequestId"  # in <cluster>-token: the last requestId restored


def _now() -> datetime:
    return datetime.now(UTC)


def active(r: ClusterPass) -> EtcdRestoreStatus | None:
    """The restore this pass must work on: a new requestId, or one recorded and not finished."""
    want = r.spec.etcd_snapshots.restore if r.spec.etcd_snapshots else None
    cur = r.old.etcd_restore
    if want is None:
        return None
    if cur is not None and cur.request_id == want.request_id:
        return None if cur.step in DONE else cur.model_copy(deep=True)
    now = _now()
    return EtcdRestoreStatus(
        request_id=want.request_id, name=want.name, step="Pending", started_time=now, step_started_time=now
    )


def _owns_token_secret(r: ClusterPass) -> bool:
    ref = r.spec.k3s.token_secret_ref
    return ref is None or ref.name != token_secret_name(r.ref.name)


async def _done_before(r: ClusterPass, request_id: str) -> bool:
    """Whether ``request_id`` was restored already: recorded in ``<cluster>-token`` (durable, backed up
    with the cluster), so a lost status never rolls the cluster back a second time."""
    if not _owns_token_secret(r):
        return False  # the user's own Secret: the operator never writes it; status is the record
    data = await r.deps.objects.read_secret(r.ref.namespace, token_secret_name(r.ref.name)) or {}
    return data.get(RESTORED_KEY, b"").decode(errors="replace") == request_id


async def advance(r: ClusterPass, private_key: str) -> None:
    """Do the next step of a restore in flight; NotYet until the cluster only has to turn Ready."""
    cur = active(r)
    if cur is None:
        return
    if cur.step == "Pending" and await _done_before(r, cur.request_id):
        cur.step, cur.message = "Complete", f"restored {cur.name} before (recorded in the token Secret)"
        r.status.etcd_restore = cur
        return
    old = r.old.etcd_restore
    if cur.step == "Pending" and (old is None or old.request_id != cur.request_id):
        r.event(
            "Normal", "RestoreRequested", f"restoring etcd snapshot {cur.name} (request {cur.request_id})"
        )
    cur.step_started_time = cur.step_started_time or _now()  # a record from before steps were timed
    r.status.etcd_restore = cur
    r.status.phase = "Restoring"
    servers = snapshots.servers(r)
    all_servers = [v for v in r.views.values() if v.role == "server"]
    if len(servers) < len(all_servers) or any(v.k3s_version is None for v in all_servers):
        _progress(r, cur, "every server must be reachable and run K3s before a restore")
        raise errors.NotYet(5.0, "Restoring", "waiting for every server to be reachable")
    init, others = servers[0], servers[1:]
    try:
        await _step(r, cur, init, others, private_key)
    except errors.NotYet as wait:
        if wait.reason == restore_jobs.IN_FLIGHT:  # the step's job runs: say so in status
            _progress(r, cur, wait.message)
        raise
    except errors.PermanentError as exc:
        if exc.reason == restore_jobs.TIMED_OUT:  # stalled at the step: a later look may see its end
            _progress(r, cur, exc.message)
            raise
        cur.step, cur.message = "Failed", exc.message[:1000]
        r.conditions.set(RESTORED, False, "RestoreFailed", cur.message)
        r.event("Warning", "RestoreFailed", f"restore of {cur.name}: {exc.message}")
        raise


async def _step(
    r: ClusterPass, cur: EtcdRestoreStatus, init: NodeView, others: list[NodeView], key: str
) -> None:
    if cur.step == "Pending":
        reset = await restore_jobs.look(
            r, init, key, restore_jobs.job_of(cur.request_id, restore_jobs.RESET, init.name)
        )
        if reset.running or reset.rc is not None:  # the status was lost after the reset began
            _next(r, cur, "Resetting", f"found this request's cluster-reset job on {init.name}")
        found = [s for s in await snapshots.list_on(r, init, key) if s.name == cur.name]
        local = [s for s in found if s.node == init.name and s.location.startswith("file:///")]
        if not local:
            where = f" (it is on {found[0].node}: {found[0].location})" if found else ""
            raise errors.InvalidSpec(
                f"snapshot {cur.name} is not on the init server {init.name}{where}; name one that "
                "`k3s etcd-snapshot ls` lists there (status.etcdSnapshots)",
                reason="SnapshotNotFound",
            )
        cur.path = local[0].location.removeprefix("file://")
        _next(r, cur, "StoppingServers", f"found {cur.path} on {init.name}")
    if cur.step == "StoppingServers":
        for view in [*others, init]:
            await _run(r, view, key, "systemctl stop k3s", "stopping K3s")
        r.event("Normal", "ServersStopped", f"K3s stopped on {len(others) + 1} server(s) for the restore")
        _next(r, cur, "Resetting", "K3s stopped on every server")
    if cur.step == "Resetting":
        path = shlex.quote(cur.path) if cur.path else None
        script = f"k3s server --cluster-reset --cluster-reset-restore-path={path}" if path else None
        await restore_jobs.run(
            r, cur, init, key, restore_jobs.RESET, script, "cluster-reset", RESET_TIMEOUT_S
        )
        r.event("Normal", "ClusterReset", f"{init.name} reset etcd to snapshot {cur.name}")
        _next(r, cur, "StartingInit", f"{init.name} restored {cur.name}")
    if cur.step == "StartingInit":
        await restore_jobs.run(
            r, cur, init, key, restore_jobs.START, "systemctl start k3s", "starting K3s", START_TIMEOUT_S
        )
        r.event("Normal", "ServerStarted", f"K3s started on {init.name} with the restored datastore")
        _next(r, cur, "Rejoining", f"{init.name} is up")
    if cur.step == "Rejoining":
        left = [v for v in others if v.name not in cur.rejoined]
        if left:
            view = left[0]
            script = f"rm -rf {DB_DIR} && systemctl start k3s"
            await restore_jobs.run(
                r, cur, view, key, restore_jobs.REJOIN, script, "rejoining", START_TIMEOUT_S
            )
            cur.rejoined = [*cur.rejoined, view.name]  # assigned, not appended: the field counts as set
            r.event("Normal", "ServerRejoined", f"{view.name} dropped its etcd data and rejoined {init.name}")
            _next(r, cur, "Rejoining", f"{view.name} rejoined")
        agents = [v for v in r.views.values() if v.role == "agent" and v.ip and v.vm_ready and v.k3s_version]
        await asyncio.gather(
            *(_run(r, a, key, "systemctl restart k3s-agent", "restarting the agent") for a in agents)
        )
        _next(r, cur, "WaitingReady", "every server restarted; waiting for the nodes to be Ready")
    _progress(r, cur, cur.message or "waiting for the nodes to be Ready")


def _next(r: ClusterPass, cur: EtcdRestoreStatus, step: str, message: str) -> NoReturn:
    """Record the step reached and end the pass: one step per pass, so a spec edit, spec.paused or a
    deletion is seen between steps, and the status written at the end of the pass records it."""
    cur.step = step  # type: ignore[assignment]  # one of RestoreStep, checked by the model on write
    cur.step_started_time = _now()
    _progress(r, cur, message)
    raise errors.NotYet(0.2, "Restoring", f"restore of {cur.name}: {step}")


def _progress(r: ClusterPass, cur: EtcdRestoreStatus, message: str) -> None:
    cur.message = message[:1000]
    r.status.etcd_restore = cur
    text = f"restore of {cur.name}: {cur.step}: {cur.message}"
    r.conditions.set(RESTORED, False, "Restoring", text)
    r.conditions.reconciling(True, "Restoring", text)


async def _run(r: ClusterPass, view: NodeView, key: str, command: str, what: str) -> None:
    """A short step (stopping K3s, restarting an agent), awaited."""
    result = await r.deps.ssh.run(access.node_target(r, view, key), command, timeout_s=120.0)
    if not result.ok:
        raise errors.CommandFailed(
            f"node {view.name}: {what} failed (exit {result.exit_status}): "
            f"{guest_text(result.stderr or result.stdout, 400)}",
            exit_status=result.exit_status,
            reason="RestoreStepFailed",
        )


async def finish(r: ClusterPass, private_key: str) -> None:
    """The cluster is Ready: a restore waiting for that is complete (recorded as done, then its guest
    jobs' files go)."""
    cur = r.status.etcd_restore
    if cur is None or cur.step != "WaitingReady":
        return
    if _owns_token_secret(r):  # a merge: the token and the cluster id stay
        await r.deps.objects.write_secret(
            r.ref.namespace,
            token_secret_name(r.ref.name),
            {RESTORED_KEY: cur.request_id.encode()},
            labels=managed_labels(r.ref.name),
            owner=r.ref.owner_reference(),
        )
    cur = cur.model_copy(deep=True)
    cur.step, cur.finished_time = "Complete", _now()
    took = (cur.finished_time - cur.started_time).total_seconds() if cur.started_time else None
    cur.message = f"restored {cur.name}" + (f" in {took:.0f} s" if took is not None else "")
    r.status.etcd_restore = cur
    r.conditions.set(RESTORED, True, "Restored", cur.message)
    r.event("Normal", "RestoreComplete", f"cluster Ready again: {cur.message}")
    await restore_jobs.clean(r, cur.request_id, snapshots.servers(r), private_key)
