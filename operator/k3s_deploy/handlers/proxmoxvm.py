"""kopf handlers for ProxmoxVM: a shared scheduler runs the reconcile passes; deletion is a handler.

Why a scheduler and not create/update handlers: passes of one object never overlap (no two passes race
on the same VM), each sleeps exactly as long as the last pass asked (a few seconds while a Proxmox task
runs, ``resync_seconds`` in steady state) and is woken at once when the spec or our annotations change
(``on.event``). Why one shared scheduler and not a kopf daemon per object: an idle object then costs a
heap entry and a slim copy of its body, not a task, kopf's daemon records and kopf's full body copy
(see :mod:`k3s_deploy.handlers.scheduler`). Every object reaches the scheduler through ``on.event``,
including kopf's initial listing, so a restarted operator picks every object up again. Status is
written through the KubeGateway as a whole, so kopf's progress annotations never mix with it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from k3s_deploy import metrics
from k3s_deploy.api.common import GROUP, VERSION
from k3s_deploy.api.proxmoxvm import KIND, PLURAL, ProxmoxVM
from k3s_deploy.errors import K3sDeployError, NotYet, backoff
from k3s_deploy.handlers import engine
from k3s_deploy.handlers.peering import PEERING_GROUP, PEERING_VERSION, peering_plural
from k3s_deploy.handlers.scheduler import Scheduler
from k3s_deploy.logs import deliberate_wait
from k3s_deploy.services.conditions import Conditions, acknowledge
from k3s_deploy.services.ownership import AdoptionPolicy, claimed_cluster
from k3s_deploy.services.proxmoxvm.delete import finalize, let_go
from k3s_deploy.services.proxmoxvm.reconcile import Outcome, object_ref, open_session, owned_ref, reconcile
from k3s_deploy.services.proxmoxvm.work import (
    ORPHAN_ANNOTATION,
    RESTART_ANNOTATION,
    Event,
    Memory,
    Work,
)
from k3s_deploy.wiring import Runtime

log = logging.getLogger(__name__)
PASSES_IN_FLIGHT = 32  # at once, over all objects (Proxmox and Kubernetes calls are bounded further down)
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def _adoption(runtime: Runtime) -> AdoptionPolicy:
    return AdoptionPolicy.from_settings(runtime.settings.adoptable_tag, runtime.settings.adoptable_pool)


def scheduler_for(runtime: Runtime) -> Scheduler:
    """The process's one ProxmoxVM scheduler, started on first use (inside kopf's event loop)."""
    if runtime.scheduler is None:
        runtime.scheduler = Scheduler(
            lambda uid: reconcile_once(runtime, uid),
            resync=runtime.settings.resync_seconds,
            workers=PASSES_IN_FLIGHT,
        )
        if runtime.gate is not None:
            runtime.scheduler.pause(runtime.gate.paused)
        runtime.scheduler.start()
    return runtime.scheduler


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a pass needs of a body: no managedFields, no client-side-apply copy of the manifest."""
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and any(key in annotations for key in _DROPPED_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS}
    return {**dict(body), "metadata": meta}


def _current(runtime: Runtime, body: Mapping[str, Any]) -> dict[str, Any]:
    return engine.current(runtime, body)


async def _write(runtime: Runtime, raw: dict[str, Any], status: dict[str, Any]) -> None:
    async def patch(namespace: str, name: str, status: dict[str, Any]) -> str | None:
        return await runtime.kube.patch_status(GROUP, VERSION, PLURAL, namespace, name, status)

    await engine.write(runtime, raw, status, patch)


async def _post(runtime: Runtime, raw: dict[str, Any], events: list[Event]) -> None:
    await engine.post(runtime, raw, events)


def _validated(runtime: Runtime, uid: str, raw: dict[str, Any]) -> ProxmoxVM:
    """The object's model, validated again only when its input changed (a new resourceVersion, a
    status or annotations we wrote): steady-state passes reuse it. Passes never mutate the model
    (they work on a copy of its status)."""
    key = (
        (raw.get("metadata") or {}).get("resourceVersion"),
        runtime.last_status.get(uid),
        dict(runtime.last_annotations.get(uid) or {}),
    )
    cached = runtime.models.get(uid)
    if cached is not None and key[0] is not None:
        (version, status, annotations), found = cached
        if version == key[0] and status is key[1] and annotations == key[2] and isinstance(found, ProxmoxVM):
            return found
    model = ProxmoxVM.model_validate(raw)
    runtime.models[uid] = (key, model)
    return model


async def reconcile_once(runtime: Runtime, uid: str) -> float:
    """One pass for one object (its latest body); returns how long to sleep before the next."""
    resync = runtime.settings.resync_seconds
    async with runtime.lock(uid):
        started = time.perf_counter()
        body = runtime.bodies.get(uid)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return resync  # gone or being deleted while this pass waited: the finalizer's turn
        raw = _current(runtime, body)
        try:
            model = _validated(runtime, uid, raw)
        except ValidationError as exc:
            await _write(runtime, raw, engine.invalid_spec(raw, exc, ["VMProvisioned"]))
            return resync
        ack = acknowledge(raw.get("status"), model.metadata.get("generation"))
        if ack is not None:  # a generation not seen yet: say so now, not when the pass ends
            # The pass still starts from the model of the stored status: its observedGeneration is
            # how the pass knows the spec changed (and reads the VM config again).
            await _write(runtime, raw, ack)
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
            adoption=_adoption(runtime),
            wake=None if runtime.scheduler is None else functools.partial(runtime.scheduler.wake, uid),
        )
        if outcome.annotations:
            meta = raw["metadata"]
            await runtime.kube.patch_annotations(
                GROUP, VERSION, PLURAL, meta["namespace"], meta["name"], outcome.annotations
            )
            runtime.last_annotations.setdefault(uid, {}).update(outcome.annotations)
        await _write(runtime, raw, outcome.status)
        await _post(runtime, raw, outcome.events)
        metrics.observe_reconcile(KIND, time.perf_counter() - started, outcome.error)  # waiting is no error
        return min(outcome.requeue_after, resync) if outcome.requeue_after is not None else resync


def _fingerprint(body: kopf.Body) -> tuple[Any, ...]:
    annotations = body.metadata.annotations or {}
    return (
        body.metadata.get("generation"),
        annotations.get(RESTART_ANNOTATION),
        annotations.get(ORPHAN_ANNOTATION),
        claimed_cluster(body.metadata),  # the owner the tag derives from
        (body.get("status") or {}).get("observedGeneration") is None,  # status wiped: rebuild it now
    )


async def wake(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the scheduler's view of the object: add it, wake it when its spec or our annotations
    change (not on our own status writes), stop it when it is being deleted or gone."""
    runtime = _runtime(memo)
    scheduler = scheduler_for(runtime)
    uid = str(body.metadata.uid)
    if event.get("type") == "DELETED":
        scheduler.remove(uid)
        runtime.forget(uid)
        return
    slimmed = slim(body)
    engine.observe(runtime, body.metadata, listing=event.get("type") is None)
    # The body keeps its status even while our last write is laid over it: the watch can deliver a
    # write before its reply is handled, and once that body is matched to the write the overlay
    # goes and the body's status is all a pass has (without it, the pass started from no status).
    runtime.bodies[uid] = slimmed
    if body.metadata.get("deletionTimestamp"):
        scheduler.remove(uid)  # the finalizer handler takes over (after a running pass ends)
        return
    fingerprint = _fingerprint(body)
    if uid not in scheduler:
        runtime.seen[uid] = fingerprint
        namespace, name = str(body.metadata.namespace), str(body.metadata.name)
        scheduler.add(uid, f"{namespace}/{name}", {"kind": KIND, "namespace": namespace, "name": name})
    elif runtime.seen.get(uid) != fingerprint:
        runtime.seen[uid] = fingerprint
        scheduler.wake(uid)


async def stop_scheduler(memo: kopf.Memo, **_: Any) -> None:
    """Cancel the passes in flight when the operator exits (they are idempotent: the next run redoes)."""
    runtime = _runtime(memo)
    if runtime.scheduler is not None:
        await runtime.scheduler.stop()


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
        gone = let_go(model.spec.effective_deletion_policy(), status.vmid, status.node, obj.annotations)
        if gone is not None:  # no Proxmox call needed (no VM, Retain, orphaned)
            await _post(runtime, raw, gone)
            runtime.forget(uid)
            return
        work: Work | None = None
        try:
            memory = runtime.memories.get(uid, Memory())
            obj = await owned_ref(runtime.kube, model, memory)
            session = await open_session(runtime.kube, runtime.sessions, model)

            async def save() -> None:
                return None

            work = Work(
                obj, model.spec, status, conditions, session, memory, save, adoption=_adoption(runtime)
            )
            done = await finalize(work)
        except NotYet as pause:
            conditions.reconciling(True, pause.reason, pause.message)
            await _finish(runtime, raw, work, status, conditions)
            raise kopf.TemporaryError(deliberate_wait(pause.message), delay=pause.after_s or 1.0) from None
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
            raise kopf.TemporaryError(exc.message, delay=backoff(retry + 1, 60.0)) from None
        await _post(runtime, raw, work.events)
        if done:
            runtime.forget(uid)


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


def register(registry: kopf.OperatorRegistry, *, peering_clusterwide: bool | None = None) -> None:
    """Put the ProxmoxVM handlers into ``registry`` (called by the runner, not on import); with
    ``peering_clusterwide`` set, also the watch that pauses the scheduler while a peer is in charge."""
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(wake)
    kopf.on.cleanup(registry=registry)(stop_scheduler)
    kopf.on.delete(GROUP, VERSION, PLURAL, id="finalize", registry=registry)(delete)
    if peering_clusterwide is not None:
        kopf.on.event(
            PEERING_GROUP,
            PEERING_VERSION,
            peering_plural(peering_clusterwide),
            registry=registry,
            id="peering-gate",
        )(peering_changed)


async def peering_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Pause or resume the scheduler as the peering object says (see :mod:`.peering`)."""
    runtime = _runtime(memo)
    if runtime.gate is None:
        return
    verdict = runtime.gate.observe(body, deleted=event.get("type") == "DELETED")
    if verdict is not None:
        scheduler_for(runtime).pause(verdict)


__all__ = ["delete", "peering_changed", "register", "scheduler_for", "stop_scheduler", "wake"]
