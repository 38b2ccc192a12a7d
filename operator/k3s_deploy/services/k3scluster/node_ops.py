"""Long work on one node as steps recorded in ``status.nodes[].operation``, never awaited in a pass.

Drain -> the change (an :class:`NodeAction`: Upgrade, Reconfigure, ...) -> WaitReady -> uncordon.
Each pass does what the current step allows without waiting (cordon and issue evictions; start the
change as a detached job on the guest, or read its exit code; read the node list once) and either
moves on or raises :class:`~k3s_deploy.errors.NotYet` to be looked at again. So ``spec.paused``, a spec
edit or a deletion is seen within a pass or two, and an operator restarted half-way resumes from the
record. Each step has its own timeout counted from its recorded start.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from k3s_deploy import errors, metrics
from k3s_deploy.api.k3scluster_status import NodeState
from k3s_deploy.api.node_operation import NodeOperation, OperationKind
from k3s_deploy.ports.target import DrainOptions
from k3s_deploy.services.cadence import JOB_FLOOR, JOB_FRACTION, next_look
from k3s_deploy.services.k3scluster import drain, guest_jobs, guest_values
from k3s_deploy.services.k3scluster.access import node_target
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView

POLL_S = 2.0  # between looks at a drain; the most a look at a job or a node turning Ready waits


class NodeAction(Protocol):
    """A change applied to a drained node. ``name`` is recorded as the operation's action and as the
    step's kind while it runs; ``start`` launches it as the detached guest job ``job`` (see
    :mod:`guest_jobs`); ``finish`` checks the job's exit code and what the node reports (raising the
    error to show); ``applied`` says the node has the change already (nothing to start); the job's
    duration is timed as ``metric``."""

    @property
    def name(self) -> OperationKind: ...
    @property
    def target(self) -> str: ...
    @property
    def ready_version(self) -> str: ...
    @property
    def state(self) -> NodeState: ...
    @property
    def metric(self) -> metrics.SshOperation: ...
    def applied(self, view: NodeView) -> bool: ...
    async def start(self, r: ClusterPass, view: NodeView, job: str) -> guest_jobs.Started: ...
    async def finish(self, r: ClusterPass, view: NodeView, job: guest_jobs.JobState) -> None: ...


def drain_options(r: ClusterPass) -> DrainOptions | None:
    spec = r.spec.upgrade.drain
    if not spec.enabled:
        return None
    return DrainOptions(
        timeout_s=float(spec.timeout_seconds),
        ignore_daemon_sets=spec.ignore_daemon_sets,
        delete_empty_dir_data=spec.delete_empty_dir_data,
        force=spec.force,
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _step(r: ClusterPass, kind: OperationKind, action: NodeAction, attempt: int = 1) -> NodeOperation:
    timeouts = {
        "Drain": r.spec.upgrade.drain.timeout_seconds,
        "WaitReady": r.spec.upgrade.node_ready_timeout_seconds,
    }
    return NodeOperation(
        kind=kind,
        action=action.name,
        target=action.target,
        started_time=_now(),
        timeout_seconds=int(timeouts.get(kind, r.spec.ssh.command_timeout_seconds)),
        attempt=attempt,
    )


def _elapsed(op: NodeOperation) -> float:
    return (_now() - op.started_time).total_seconds()


def look_after(op: NodeOperation) -> float:
    """Seconds until the next look at a step in flight (a guest job, a node turning Ready), paced by
    the step's age (:mod:`k3s_deploy.services.cadence`): a young one soon, an old one every POLL_S."""
    return next_look(_elapsed(op), floor=JOB_FLOOR, fraction=JOB_FRACTION, cap=POLL_S)


async def advance(
    r: ClusterPass, name: str, action: NodeAction, *, kubeconfig: str, private_key: str
) -> None:
    """Move ``name``'s work on by what can be done now. Returns once the node has the change, is Ready
    and uncordoned; raises NotYet while a step is in flight, or the error that stopped it."""
    view = r.views[name]
    op = view.operation
    if op is None or op.action != action.name or op.target != action.target:
        await _let_go(r, view, action, private_key)
        if action.applied(view):
            first: OperationKind = "WaitReady"
        else:
            first = "Drain" if drain_options(r) is not None else action.name
        op = view.operation = _step(r, first, action)
    while True:
        if op.kind == "Drain":
            view.state = "Draining"
            left = await drain_round(r, name, op, kubeconfig)
            if left is not None:
                view.operation = left
                raise errors.NotYet(POLL_S, "Draining", f"draining node {name}")
            op = view.operation = _step(r, "WaitReady" if action.applied(view) else action.name, action)
        elif op.kind == "WaitReady":
            view.state = action.state
            if not await _ready(r, view, op, action, kubeconfig):
                raise errors.NotYet(look_after(op), "WaitingForNode", f"waiting for node {name} to be Ready")
            await r.deps.target.set_unschedulable(kubeconfig, name, False)
            view.operation = None
            return
        else:
            view.state = action.state
            if not await _change(r, view, op, action, private_key):
                raise errors.NotYet(look_after(op), action.state, f"{action.name} of node {name} in progress")
            op = view.operation = _step(r, "WaitReady", action)


async def run_change(r: ClusterPass, name: str, action: NodeAction, *, private_key: str) -> None:
    """Only the change, for a node with nothing to drain and no Node to wait for (a first install:
    health() waits for it to register). Raises NotYet while the job runs."""
    view = r.views[name]
    op = view.operation
    if op is None or op.action != action.name or op.target != action.target:
        await _let_go(r, view, action, private_key)
        op = view.operation = _step(r, action.name, action)
    view.state = action.state
    if not await _change(r, view, op, action, private_key):
        raise errors.NotYet(look_after(op), action.state, f"{action.name} of node {name} in progress")
    view.operation = None


async def _let_go(r: ClusterPass, view: NodeView, action: NodeAction, private_key: str) -> None:
    """Before other work replaces a recorded one: its job ends first (one installer at a time), and
    its files go, so a later job of the same name never reads a stale exit code."""
    old = view.operation
    if old is None or old.job is None:
        return
    target = node_target(r, view, private_key)
    timeout = float(r.spec.ssh.command_timeout_seconds)
    if (await guest_jobs.poll(r.deps.ssh, target, old.job, timeout_s=timeout)).running:
        raise errors.NotYet(
            look_after(old),
            action.state,
            f"{old.action} of node {view.name} still runs; {action.name} waits for it",
        )
    await guest_jobs.clean(r.deps.ssh, target, old.job, timeout_s=timeout)


def drain_step(r: ClusterPass, action: str) -> NodeOperation:
    """A Drain step on its own (a member leaving the cluster: nothing follows it on the node)."""
    return NodeOperation(
        kind="Drain",
        action=action,
        started_time=_now(),
        timeout_seconds=int(r.spec.upgrade.drain.timeout_seconds),
    )


async def drain_round(r: ClusterPass, name: str, op: NodeOperation, kubeconfig: str) -> NodeOperation | None:
    """One round of ``kubectl drain``: cordon, evict what may go. None once nothing is left to wait
    for, else the step with its eviction count (the caller records it and looks again). Evictions a
    PodDisruptionBudget refuses are issued again on the next round."""
    options = drain_options(r)
    target = r.deps.target
    if options is None or not await target.set_unschedulable(kubeconfig, name, True):
        return None
    pods = await target.pods_on(kubeconfig, name)
    victims = drain.evictable(name, pods, options)
    refused = [f"{ns}/{pod}" for ns, pod in victims if not await target.evict(kubeconfig, ns, pod)]
    evicted = (op.evicted or 0) + len(victims) - len(refused)
    op = op.model_copy(update={"evicted": evicted})
    going = [
        f"{p.namespace}/{p.name}"
        for p in pods
        if p.terminating and not p.mirror and p.controller_kind != "DaemonSet"
    ]
    if not victims and not going:
        r.event("Normal", "Drained", f"Cordoned and drained node {name} ({evicted} pod(s) evicted)")
        return None
    if _elapsed(op) >= op.timeout_seconds:
        what = (
            f"eviction of {', '.join(refused[:5])} still refused after {op.timeout_seconds}s "
            "(a PodDisruptionBudget?)"
            if refused
            else f"pods {', '.join((going or [f'{ns}/{p}' for ns, p in victims])[:5])} still "
            f"terminating after {op.timeout_seconds}s"
        )
        raise errors.TransientError(f"draining node {name}: {what}", reason="DrainTimeout")
    return op


async def _change(
    r: ClusterPass, view: NodeView, op: NodeOperation, action: NodeAction, private_key: str
) -> bool:
    """Start the change as a guest job (recorded before it starts), or read how it ended."""
    target = node_target(r, view, private_key)
    timeout = float(r.spec.ssh.command_timeout_seconds)
    if op.job is None:
        job = guest_jobs.job_id(action.name.lower(), view.name, action.target)
        view.operation = op = op.model_copy(update={"job": job})
        await r.flush()  # a crash right after the start finds the job on the guest
        await action.start(r, view, job)  # started, there already, or another job runs: the look tells
    assert op.job is not None
    # one look (a quick job may have ended already); never a wait
    state = await guest_jobs.poll(r.deps.ssh, target, op.job, timeout_s=timeout)
    late = _elapsed(op) >= op.timeout_seconds
    if state.running:
        if late:
            await guest_jobs.clean(r.deps.ssh, target, op.job, timeout_s=timeout)
            raise errors.K3sInstallFailed(
                f"node {view.name}: {action.name} still running after {op.timeout_seconds}s (see "
                f"{guest_jobs.JOB_DIR}/{op.job}.log on the node)"
            )
        return False
    if state.rc is None:  # not on the guest: consumed already, never started, or another job ran
        if action.applied(view):
            return True
        if late:
            raise errors.K3sInstallFailed(
                f"node {view.name}: {action.name} could not start within {op.timeout_seconds}s: another "
                f"job kept running in {guest_jobs.JOB_DIR} on the node"
            )
        if await action.start(r, view, op.job) == "started":
            view.operation = op.model_copy(update={"attempt": op.attempt + 1})
        return False
    metrics.observe_ssh(action.metric, _elapsed(op), ok=state.rc == 0)
    try:
        await action.finish(r, view, state)
    finally:
        await guest_jobs.clean(r.deps.ssh, target, op.job, timeout_s=timeout)
    return True


async def _ready(
    r: ClusterPass, view: NodeView, op: NodeOperation, action: NodeAction, kubeconfig: str
) -> bool:
    """One look at the node list: Ready at the version the change brings?"""
    version = action.ready_version
    try:
        found = {n.name: n for n in guest_values.target_nodes(await r.deps.target.nodes(kubeconfig))}
        node = found.get(view.name)
        seen = (
            "not registered"
            if node is None
            else f"Ready={node.ready} at {node.kubelet_version or 'unknown version'}"
        )
    except errors.KubeUnavailable as exc:
        node, seen = None, exc.message
    if node is not None and node.ready and node.kubelet_version == version:
        return True
    if _elapsed(op) >= op.timeout_seconds:
        raise errors.PermanentError(
            f"node {view.name} was not Ready at {version} within {op.timeout_seconds}s after the "
            f"{action.name.lower()} ({seen}); see the node's K3s log, fix it, then change the spec to retry",
            reason="NodeNotReady",
        )
    return False
