"""kopf handlers for K3sCluster: a per-object daemon runs reconcile passes; deletion is a handler.

Same shape as the ProxmoxVM controller: one loop per cluster serialises every pass (an install is
never started twice), sleeps as long as the last pass asked (seconds while VMs boot or nodes join,
``resync_seconds`` when Ready, growing backoff while Stalled) and is woken at once when the spec
changes or one of its ProxmoxVM children changes state. Status is written as a whole through the
API, Events through the gateway. The work itself is in :mod:`k3s_deploy.services.k3scluster`.
kopf calls these through :mod:`.k3scluster_entry`, so this module loads at the first K3sCluster event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

import kopf
from pydantic import ValidationError

from k3s_deploy import errors, metrics
from k3s_deploy.handlers import engine
from k3s_deploy.handlers.loop import reconcile_forever
from k3s_deploy.logs import deliberate_wait
from k3s_deploy.services.conditions import acknowledge
from k3s_deploy.services.k3scluster import cleanup
from k3s_deploy.services.k3scluster.reconcile import STEPS, Deps, Outcome, reconcile
from k3s_deploy.services.k3scluster.snapshots import SNAPSHOT_REQUEST
from k3s_deploy.services.k3scluster.state import Event
from k3s_deploy.services.k3scluster.teardown import teardown
from k3s_deploy.services.proxmoxvm.work import CLOUD_INIT_STALE
from k3s_deploy.wiring import Runtime

log = logging.getLogger(__name__)
KIND = "K3sCluster"


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _current(runtime: Runtime, body: kopf.Body) -> dict[str, Any]:
    return engine.current(runtime, body)


async def _write(
    runtime: Runtime, deps: Deps, raw: dict[str, Any], status: dict[str, Any], *, force: bool = False
) -> None:
    async def patch(namespace: str, name: str, status: dict[str, Any]) -> str | None:
        return await deps.objects.patch_cluster_status(namespace, name, status)

    await engine.write(runtime, raw, status, patch, force=force)


TRANSIENT_FIRST_RETRY_S = 1.0


def _next_delay(runtime: Runtime, uid: str, outcome: Outcome) -> float:
    """Seconds until the next pass: as asked while waiting, backoff on errors, resync when done."""
    resync = runtime.settings.resync_seconds
    failures = runtime.failures
    if outcome.error is None:
        failures.pop(uid, None)
        return min(outcome.requeue_after, resync) if outcome.requeue_after is not None else resync
    count = failures[uid] = failures.get(uid, 0) + 1
    if outcome.error.transient:
        # 1, 2, 4 ... s: the common case is a guest whose VM just came up and whose sshd does not answer
        # yet; a first retry at 5 s cost the whole bootstrap 5 s in a quarter of the 3+2 bench runs.
        asked = outcome.error.delay if isinstance(outcome.error, errors.TransientError) else None
        return asked or errors.backoff(count, max(resync, 60.0), first=TRANSIENT_FIRST_RETRY_S)
    # Stalled: a change of spec wakes us at once; otherwise look again rarely (a Secret may appear).
    return errors.backoff(count, max(resync, 600.0), first=resync)


def _observe(
    raw: dict[str, Any], status: dict[str, Any], started: float, error: BaseException | None
) -> None:
    """Metrics of one pass: duration and result, and the phase the cluster is in now."""
    metrics.observe_reconcile(KIND, time.perf_counter() - started, error)
    meta = raw["metadata"]
    metrics.set_object_phase(KIND, meta["namespace"], meta["name"], status.get("phase") or "Unknown")


async def reconcile_once(runtime: Runtime, body: kopf.Body) -> float:
    uid = str(body.metadata.uid)
    deps = runtime.cluster_ports()
    async with runtime.lock(uid):
        raw = _current(runtime, body)
        started = time.perf_counter()
        ack = acknowledge(raw.get("status"), raw["metadata"].get("generation"))
        if ack is not None:  # a generation not seen yet: say so now, not when the pass ends
            ack["phase"] = ack.get("phase") or "Provisioning"
            await _write(runtime, deps, raw, ack)
            raw["status"] = ack
        try:
            outcome = await reconcile(raw, deps, generation=raw["metadata"].get("generation"))
        except ValidationError as exc:
            status = engine.invalid_spec(raw, exc, STEPS, phase="Stalled")
            await _write(runtime, deps, raw, status)
            _observe(raw, status, started, errors.InvalidSpec("the spec does not validate"))
            return runtime.settings.resync_seconds
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: counted by its class, then the shared loop backs off
            _observe(raw, raw.get("status") or {}, started, exc)
            raise
        await _write(runtime, deps, raw, outcome.status, force=outcome.flushed)
        _observe(raw, outcome.status, started, outcome.error)
        await engine.post(runtime, raw, outcome.events)
        return _next_delay(runtime, uid, outcome)


async def wake(body: kopf.Body, memo: kopf.Memo, type: str | None = None, **_: Any) -> None:
    """Wake the cluster's loop when its spec or snapshot-request annotation changes, or when its status
    lost what a pass acknowledged (wiped: rebuilt at once); not on our own status writes."""
    runtime = _runtime(memo)
    uid = str(body.metadata.uid)
    engine.observe(runtime, body.metadata, listing=type is None)
    fingerprint = (
        "spec",
        body.metadata.get("generation"),
        body.metadata.annotations.get(SNAPSHOT_REQUEST),
        (body.get("status") or {}).get("observedGeneration") is None,
    )
    if runtime.seen.get(uid) != fingerprint:
        runtime.seen[uid] = fingerprint
        runtime.wakeup(uid).set()


async def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wake the owning cluster when a child VM becomes ready, gets an address, fails, or reports a
    stale cloud-init drive."""
    runtime = _runtime(memo)
    status = body.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    fingerprint = (
        "child",
        status.get("vmid"),
        tuple(status.get("addresses") or ()),
        conditions.get("Ready"),
        conditions.get("Stalled"),
        conditions.get(CLOUD_INIT_STALE),
        body.metadata.get("deletionTimestamp") is not None,
    )
    key = f"child:{body.metadata.uid}"
    if runtime.seen.get(key) == fingerprint:
        return
    runtime.seen[key] = fingerprint
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "K3sCluster" and ref.get("uid"):
            runtime.wakeup(str(ref["uid"])).set()


async def reconcile_loop(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Reconcile now, then whenever woken or the requested delay has passed, until stopped."""
    runtime = _runtime(memo)
    try:
        await reconcile_forever(
            runtime,
            str(body.metadata.uid),
            str(body.metadata.name),
            lambda: bool(stopped),
            lambda: reconcile_once(runtime, body),
            stop_signal=lambda: stopped.wait(),
            finished=lambda: bool(body.metadata.get("deletionTimestamp")),
        )
    finally:
        # this replica no longer handles the cluster (deleted, or the operator stops)
        metrics.forget_object(KIND, str(body.metadata.namespace), str(body.metadata.name))


async def delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Delete owned ProxmoxVMs (each applies its deletion policy), wait for them, remove our Secrets."""
    runtime = _runtime(memo)
    deps = runtime.cluster_ports()
    uid = str(body.metadata.uid)
    raw = _current(runtime, body)
    if not retry:
        with contextlib.suppress(errors.K3sDeployError):
            status = {**(raw.get("status") or {}), "phase": "Deleting"}
            await _write(runtime, deps, raw, status)
    uninstalled: list[Event] = []

    def note(type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        uninstalled.append(Event(type_, reason, message))

    try:
        async with runtime.lock(uid):
            try:  # K3s off the VMs that outlive the cluster, before their children go
                await cleanup.uninstall_kept(deps, raw, attempt=retry, event=note)
            finally:
                await engine.post(runtime, raw, uninstalled)
            removed = await teardown(deps.objects, raw)
    except errors.NotYet as wait:
        raise kopf.TemporaryError(deliberate_wait(wait.message), delay=wait.after_s or 2.0) from None
    except errors.K3sDeployError as exc:
        if exc.transient:
            raise kopf.TemporaryError(exc.message, delay=errors.backoff(retry + 1, 60.0)) from None
        raise kopf.PermanentError(exc.message) from None
    if removed:
        with contextlib.suppress(errors.K3sDeployError):
            await runtime.kube.post_event(
                raw, type_="Normal", reason="Deleted", message="Deleted " + ", ".join(removed)
            )
    metrics.forget_object(KIND, str(body.metadata.namespace), str(body.metadata.name))
    deps.addresses.release(uid)  # its children are gone: their addresses are free for other clusters
    deps.whole_passes.pop(uid, None)
    runtime.forget(uid)
