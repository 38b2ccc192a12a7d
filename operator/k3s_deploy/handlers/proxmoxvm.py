"""kopf handlers for ProxmoxVM: a per-object daemon runs the reconcile loop; deletion is a handler.

Why a daemon and not create/update handlers: one loop per object serialises every pass (no two passes
race on the same VM), sleeps exactly as long as the last pass asked (a few seconds while a Proxmox
task runs, ``resync_seconds`` in steady state) and is woken at once when the spec or our annotations
change (``on.event``). Status is written through the KubeGateway as a whole, so kopf's progress
annotations never mix with it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf
from pydantic import ValidationError

from k3s_deploy import metrics
from k3s_deploy.api.common import GROUP, VERSION
from k3s_deploy.api.proxmoxvm import KIND, PLURAL, ProxmoxVM
from k3s_deploy.errors import K3sDeployError
from k3s_deploy.handlers.loop import reconcile_forever
from k3s_deploy.runner import Runtime
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.proxmoxvm.delete import finalize, orphaned
from k3s_deploy.services.proxmoxvm.reconcile import Outcome, object_ref, open_session, reconcile
from k3s_deploy.services.proxmoxvm.work import (
    CLUSTER_UID_LABEL,
    ORPHAN_ANNOTATION,
    RESTART_ANNOTATION,
    Event,
    Memory,
    Requeue,
    Work,
)

log = logging.getLogger(__name__)
_IGNORED_IN_DIFF = ("lastSyncTime",)
SYNC_TIME_REFRESH = 300.0  # seconds


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _current(runtime: Runtime, body: kopf.Body) -> dict[str, Any]:
    """The body with our latest writes on top (the watch may not have delivered them yet)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in dict(body).items()}
    raw["metadata"] = dict(body.get("metadata", {}))
    uid = str(body.metadata.uid)
    if uid in runtime.last_status:
        raw["status"] = runtime.last_status[uid]
    if uid in runtime.last_annotations:
        raw["metadata"]["annotations"] = {
            **(body.metadata.annotations or {}),
            **runtime.last_annotations[uid],
        }
    return raw


def _strip(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in _IGNORED_IN_DIFF}


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal apart from lastSyncTime, which is refreshed only every few minutes (no write per resync)."""
    if a is None or _strip(a) != _strip(b):
        return False
    try:
        then = dt.datetime.fromisoformat(str(a.get("lastSyncTime")).replace("Z", "+00:00"))
        now = dt.datetime.fromisoformat(str(b.get("lastSyncTime")).replace("Z", "+00:00"))
    except ValueError:
        return True
    return (now - then).total_seconds() < SYNC_TIME_REFRESH


async def _write(runtime: Runtime, raw: dict[str, Any], status: dict[str, Any]) -> None:
    meta = raw["metadata"]
    uid = str(meta["uid"])
    if _same(runtime.last_status.get(uid) or raw.get("status"), status):
        return
    await runtime.kube.patch_status(GROUP, VERSION, PLURAL, meta["namespace"], meta["name"], status)
    runtime.last_status[uid] = status


async def _post(runtime: Runtime, raw: dict[str, Any], events: list[Event]) -> None:
    for event in events:
        try:
            await runtime.kube.post_event(raw, type_=event.type, reason=event.reason, message=event.message)
        except K3sDeployError as exc:
            log.warning("could not post event %s: %s", event.reason, exc)


def _invalid_spec(raw: dict[str, Any], exc: ValidationError) -> dict[str, Any]:
    meta = raw["metadata"]
    conditions = Conditions(raw.get("status", {}).get("conditions", []), generation=meta.get("generation"))
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    conditions.stalled(True, "InvalidSpec", f"{where}: {first.get('msg')}")
    conditions.reconciling(False)
    conditions.summarize_ready(["VMProvisioned"])
    return {
        **raw.get("status", {}),
        "observedGeneration": meta.get("generation"),
        "conditions": conditions.as_list(),
    }


async def reconcile_once(runtime: Runtime, body: kopf.Body) -> float:
    """One pass for one object; returns how long to sleep before the next."""
    uid = str(body.metadata.uid)
    resync = runtime.settings.resync_seconds
    async with runtime.lock(uid):
        raw = _current(runtime, body)
        try:
            model = ProxmoxVM.model_validate(raw)
        except ValidationError as exc:
            await _write(runtime, raw, _invalid_spec(raw, exc))
            return resync
        memory = runtime.memories.setdefault(uid, Memory())

        async def checkpoint(status: dict[str, Any]) -> None:
            await _write(runtime, raw, status)

        outcome: Outcome = await reconcile(
            model,
            kube=runtime.kube,
            sessions=runtime.sessions,
            memory=memory,
            checkpoint=checkpoint,
            max_backoff=max(resync, 30.0),
        )
        if outcome.annotations:
            meta = raw["metadata"]
            await runtime.kube.patch_annotations(
                GROUP, VERSION, PLURAL, meta["namespace"], meta["name"], outcome.annotations
            )
            runtime.last_annotations.setdefault(uid, {}).update(outcome.annotations)
        await _write(runtime, raw, outcome.status)
        await _post(runtime, raw, outcome.events)
        if outcome.error is None:
            metrics.count_reconcile(
                KIND, "success" if outcome.requeue_after is None else "retry", "Reconciled"
            )
        else:
            metrics.count_reconcile_error(KIND, outcome.error)
        return min(outcome.requeue_after, resync) if outcome.requeue_after is not None else resync


def _fingerprint(body: kopf.Body) -> tuple[Any, ...]:
    annotations = body.metadata.annotations or {}
    labels = body.metadata.labels or {}
    return (
        body.metadata.get("generation"),
        annotations.get(RESTART_ANNOTATION),
        annotations.get(ORPHAN_ANNOTATION),
        labels.get(CLUSTER_UID_LABEL),
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
async def wake(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wake the object's loop when its spec or our annotations change (not on our status writes)."""
    runtime = _runtime(memo)
    uid = str(body.metadata.uid)
    fingerprint = _fingerprint(body)
    if runtime.seen.get(uid) != fingerprint:
        runtime.seen[uid] = fingerprint
        runtime.wakeup(uid).set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0, id="reconcile")
async def reconcile_loop(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Reconcile now, then whenever woken or the requested delay has passed, until stopped."""
    runtime = _runtime(memo)
    await reconcile_forever(
        runtime,
        str(body.metadata.uid),
        str(body.metadata.name),
        lambda: bool(stopped),
        lambda: reconcile_once(runtime, body),
        stop_signal=lambda: stopped.wait(),
    )


@kopf.on.delete(GROUP, VERSION, PLURAL, id="finalize")
async def delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Apply the deletion policy; keep the finalizer (with backoff) until it is done or orphaned."""
    runtime = _runtime(memo)
    uid = str(body.metadata.uid)
    async with runtime.lock(uid):
        raw = _current(runtime, body)
        model = ProxmoxVM.model_validate(raw)
        obj = object_ref(model)
        status = model.status.model_copy(deep=True)
        conditions = Conditions(raw.get("status", {}).get("conditions", []), generation=obj.generation)
        policy = model.spec.effective_deletion_policy()
        if status.vmid is None or policy == "Retain" or orphaned_raw(raw):
            if status.vmid is not None:
                reason, why = (
                    ("Orphaned", "annotation") if orphaned_raw(raw) else ("Retained", "deletionPolicy")
                )
                message = f"VM {status.node}/{status.vmid} left untouched ({why})"
                await _post(runtime, raw, [Event("Normal", reason, message)])
            runtime.forget(uid)
            return
        work: Work | None = None
        try:
            session = await open_session(runtime.kube, runtime.sessions, model)

            async def save() -> None:
                return None

            work = Work(
                obj, model.spec, status, conditions, session, runtime.memories.get(uid, Memory()), save
            )
            done = await finalize(work)
        except Requeue as pause:
            conditions.reconciling(True, pause.reason, pause.message)
            await _finish(runtime, raw, work, status, conditions)
            raise kopf.TemporaryError(pause.message, delay=pause.delay) from None
        except K3sDeployError as exc:
            conditions.from_error(exc)
            conditions.set(
                "Deleting",
                False,
                exc.reason,
                f"{exc.message}; to release the object without touching the VM set the annotation "
                f'{ORPHAN_ANNOTATION}: "true"',
            )
            await _finish(
                runtime, raw, work, status, conditions, extra=[Event("Warning", exc.reason, exc.message)]
            )
            raise kopf.TemporaryError(exc.message, delay=min(5.0 * 2**retry, 60.0)) from None
        await _post(runtime, raw, work.events)
        if done:
            runtime.forget(uid)


def orphaned_raw(raw: dict[str, Any]) -> bool:
    value = str((raw["metadata"].get("annotations") or {}).get(ORPHAN_ANNOTATION, ""))
    return value.lower() in ("true", "yes", "1")


async def _finish(
    runtime: Runtime,
    raw: dict[str, Any],
    work: Work | None,
    status: Any,
    conditions: Conditions,
    extra: list[Event] | None = None,
) -> None:
    out = status.model_dump(by_alias=True, mode="json", exclude_none=False)
    out["conditions"] = conditions.as_list()
    try:
        await _write(runtime, raw, out)
    except K3sDeployError as exc:
        log.warning("could not write status during deletion: %s", exc)
    await _post(runtime, raw, (work.events if work else []) + (extra or []))


__all__ = ["delete", "orphaned", "reconcile_loop", "wake"]
