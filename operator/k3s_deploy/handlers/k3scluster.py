"""kopf handlers for K3sCluster: run a reconcile pass, write its status, post its Events, requeue.

Thin by design: the work is in :mod:`k3s_deploy.services.k3scluster`. One pass per cluster at a time
(an in-process lock per uid), so the create/update handler and the resync timer never race an install.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from k3s_deploy import errors
from k3s_deploy.services.conditions import RECONCILING
from k3s_deploy.services.k3scluster.reconcile import Deps, Outcome, reconcile
from k3s_deploy.services.k3scluster.teardown import teardown
from k3s_deploy.settings import OperatorSettings

GROUP = "k3sdeploy.io"
VERSION = "v1alpha1"
PLURAL = "k3sclusters"

_deps: Deps | None = None
_locks: dict[str, asyncio.Lock] = {}
_RESYNC_SECONDS = OperatorSettings().resync_seconds


def configure(deps: Deps) -> None:
    """Inject the adapters (the runner or tests); otherwise defaults are built on first use."""
    global _deps
    _deps = deps


def _get_deps() -> Deps:
    global _deps
    if _deps is None:
        from k3s_deploy.adapters.kube_children import KubeClusterObjects
        from k3s_deploy.adapters.proxmox import ProxmoxerConnector
        from k3s_deploy.adapters.ssh import AsyncSshRunner
        from k3s_deploy.adapters.target_cluster import KubernetesTargetCluster

        settings = OperatorSettings()
        _deps = Deps(
            objects=KubeClusterObjects(),
            ssh=AsyncSshRunner(),
            target=KubernetesTargetCluster(),
            proxmox=ProxmoxerConnector(
                timeout=settings.proxmox_timeout_seconds, concurrency=settings.proxmox_concurrency
            ),
        )
    return _deps


def _lock(uid: str) -> asyncio.Lock:
    return _locks.setdefault(uid, asyncio.Lock())


def _backoff(retry: int) -> float:
    """Transient failures: 5 s, 10 s, 20 s ... capped at 5 minutes (no retry storm)."""
    return float(min(5 * 2 ** min(retry, 6), 300))


def _apply(outcome: Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    patch.setdefault("status", {}).update(outcome.status)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_cluster(
    body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, retry: int, **_: Any
) -> None:
    """Bring the cluster one pass closer to its spec; requeue while work is in flight."""
    async with _lock(str(meta["uid"])):
        outcome = await reconcile(body, _get_deps(), generation=meta.get("generation"))
    _apply(outcome, body, patch)
    if outcome.requeue_after is not None:
        raise kopf.TemporaryError("waiting: " + _reconciling_message(outcome), delay=outcome.requeue_after)
    if outcome.error is not None and outcome.error.transient:
        delay = outcome.error.delay if isinstance(outcome.error, errors.TransientError) else None
        raise kopf.TemporaryError(outcome.error.message, delay=delay or _backoff(retry))
    # Permanent errors are in the status (Stalled) and an Event; the resync timer looks again later.


@kopf.timer(GROUP, VERSION, PLURAL, interval=_RESYNC_SECONDS, initial_delay=_RESYNC_SECONDS)
async def resync_cluster(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    """Periodic drift check; skipped while the create/update handler is already working on it."""
    if meta.get("deletionTimestamp"):
        return
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    lock = _lock(str(meta["uid"]))
    if lock.locked() or (conditions.get(RECONCILING) or {}).get("status") == "True":
        return
    async with lock:
        outcome = await reconcile(body, _get_deps(), generation=meta.get("generation"))
    _apply(outcome, body, patch)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_cluster(body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, retry: int, **_: Any) -> None:
    """Delete owned ProxmoxVMs (each applies its deletion policy), wait for them, remove our Secrets."""
    patch.setdefault("status", {})["phase"] = "Deleting"
    try:
        async with _lock(str(meta["uid"])):
            removed = await teardown(_get_deps().objects, body)
    except errors.WaitingForDependency as exc:
        raise kopf.TemporaryError(exc.message, delay=2.0) from exc
    except errors.K3sDeployError as exc:
        if exc.transient:
            raise kopf.TemporaryError(exc.message, delay=_backoff(retry)) from exc
        raise kopf.PermanentError(exc.message) from exc
    if removed:
        kopf.info(body, reason="Deleted", message="Deleted " + ", ".join(removed))
    _locks.pop(str(meta["uid"]), None)


def _reconciling_message(outcome: Outcome) -> str:
    for condition in outcome.status.get("conditions") or []:
        if condition.get("type") == RECONCILING:
            return str(condition.get("message", ""))
    return ""
