"""One reconcile pass of a K3sCluster: VMs -> addresses -> SSH -> K3s -> kubeconfig -> health.

Every pass starts from what exists (children, status, the nodes themselves) and does only what is
missing, so a pass can be interrupted anywhere and simply run again. The pass is a row of phases over
one :class:`~k3s_deploy.services.k3scluster.state.ClusterPass`; each phase returns (go on), raises
:class:`~k3s_deploy.errors.NotYet` (look again after N s) or raises an operator error (fail). The
outcome carries the full status to write, the Events to post and when to look again; the handler
does the writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k3s_deploy import errors
from k3s_deploy.api.common import condition
from k3s_deploy.secrets_mask import redact
from k3s_deploy.services.k3scluster import (
    access,
    addons,
    day2,
    endpoint,
    in_flight,
    job_look,
    node_settings,
    nodemeta,
    remediation,
    restore,
    snapshots,
)
from k3s_deploy.services.k3scluster.bootstrap import bootstrap, health, probe_all
from k3s_deploy.services.k3scluster.children import check_vms, ensure_children
from k3s_deploy.services.k3scluster.identity import ensure_identity
from k3s_deploy.services.k3scluster.state import (
    AGENTS_READY,
    INSTALL_FAILED,
    SERVERS_READY,
    STEPS,
    VMS_READY,
    WAIT_DELAY,
    ClusterPass,
    Deps,
    Event,
    Outcome,
)

__all__ = ["STEPS", "Deps", "Event", "Outcome", "reconcile"]


async def _phases(r: ClusterPass, d2: day2.Day2) -> None:
    await ensure_identity(r)  # before any child: every clone carries the stable id's tag
    await ensure_children(r, d2)
    d2.power()
    check_vms(r, d2)
    private_key, _tokens = await access.secrets(r)
    settings = await node_settings.with_files(r, access.settings(r))
    r.status.phase = "Bootstrapping" if not r.old.ready_servers else r.old.phase or "Bootstrapping"
    await probe_all(r, private_key)
    await restore.advance(r, private_key)
    await snapshots.configure(r, private_key)
    if await d2.before_bootstrap(private_key, settings):
        raise errors.NotYet(WAIT_DELAY)
    await bootstrap(r, private_key, settings)
    await endpoint.sync(r, private_key)
    operator_kubeconfig = await access.kubeconfig(r, private_key)
    await nodemeta.sync(r, operator_kubeconfig)
    await health(r, operator_kubeconfig, settings)
    d2.after_health()
    await restore.finish(r, private_key)
    await snapshots.after_ready(r, private_key)
    await addons.sync(r, private_key)
    r.conditions.reconciling(False)
    r.conditions.stalled(False)
    r.status.phase = "Ready"


async def run(r: ClusterPass) -> Outcome:
    d2 = day2.Day2(r)
    requeue: float | None = None
    error: errors.K3sDeployError | None = None
    try:
        if r.spec.paused:
            r.status.phase = "Paused"
            r.conditions.reconciling(False)
            try:
                await in_flight.finish(r)  # node work already in flight goes on; nothing new starts
            except errors.NotYet as wait:
                return _outcome(r, wait.after_s, None)
            d2.paused()
            return _outcome(r, None, None)
        if (look := await job_look.between(r)) is not None:
            return _outcome(r, look, None)  # only guest jobs in flight, all still running
        job_look.whole_pass(r)
        await _phases(r, d2)
    except errors.NotYet as wait:
        r.conditions.stalled(False)
        requeue = wait.after_s
    except errors.K3sDeployError as exc:
        error = exc
        r.conditions.from_error(exc)
        r.status.phase = "Stalled" if not exc.transient else r.status.phase or "Provisioning"
        _mark_step_failed(r, exc)
    # after the pass whatever its end: a NotReady or unreachable node is exactly when it matters
    await remediation.remediate(r)
    return _outcome(r, requeue, error)


def _mark_step_failed(r: ClusterPass, exc: errors.K3sDeployError) -> None:
    status = "Unknown" if exc.transient else False
    vm_trouble = any(v.vm_problem and v.vm_ready for v in r.views.values())  # VMsReady says it
    if not r.conditions.is_true(VMS_READY) and not vm_trouble:
        r.conditions.set(VMS_READY, status, exc.reason, exc.message)
        return
    failed = [v for v in r.views.values() if v.state in ("Failed", "Unreachable", INSTALL_FAILED)]
    roles = {v.role for v in failed} or {"server", "agent"}
    for role, cond in (("server", SERVERS_READY), ("agent", AGENTS_READY)):
        if role in roles:
            r.conditions.set(cond, status, exc.reason, exc.message)


def _outcome(r: ClusterPass, requeue: float | None, error: errors.K3sDeployError | None) -> Outcome:
    if r.views:
        r.store_nodes()
    r.summarize()
    r.status.observed_generation = r.generation
    if error is not None:
        # once per new error, not per retry: a permanent one is in Stalled, a transient one in Reconciling
        kind = "Stalled" if not error.transient else "Reconciling"
        previous = condition(r.old.conditions, kind)
        same = previous is not None and previous.message == redact(error.message)
        if not error.transient:
            same = same and previous is not None and previous.reason == error.reason
        if not same:
            r.event("Warning", error.reason, error.message)
    return Outcome(
        status=r.status_dict(), events=r.events, requeue_after=requeue, error=error, flushed=r.flushed
    )


async def reconcile(body: Mapping[str, Any], deps: Deps, *, generation: int | None = None) -> Outcome:
    """Run one pass; never raises K3sDeployError (it is folded into the outcome)."""
    return await run(ClusterPass(body, deps, generation=generation))
