"""Carrying out day-2 node work over SSH and the cluster's API: the rollout steps, upgrade a node,
remove a member.

A node's upgrade is long work recorded in status (:mod:`node_ops`): each pass moves it on by one
step and ends (NotYet) while it is in flight, so a pass (or an operator process) that dies half-way
is picked up by the next one. A member removed by a scale-down is drained the same way, one round per
pass (``drain_leaving``), before its Node, K3s and VM go.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

from k3s_deploy import errors, metrics
from k3s_deploy.api.common import condition
from k3s_deploy.api.k3scluster_status import UpgradeStatus
from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.services.k3scluster import install, node_ops, upgrade, versions
from k3s_deploy.services.k3scluster.access import ssh_target as build_target
from k3s_deploy.services.k3scluster.installer_actions import Upgrade
from k3s_deploy.services.k3scluster.node_ops import drain_options
from k3s_deploy.services.k3scluster.scaling import Surplus
from k3s_deploy.services.k3scluster.state import ClusterPass, as_dict, to_model

UP_TO_DATE = "UpToDate"
REMOVE = "Remove"  # the action of a leaving member's drain
UNINSTALL = {"server": "/usr/local/bin/k3s-uninstall.sh", "agent": "/usr/local/bin/k3s-agent-uninstall.sh"}


async def drain_leaving(r: ClusterPass, kubeconfig: str, name: str) -> None:
    """One drain round of a member on its way out, its step recorded on its status entry; raises
    NotYet while pods are still to go (so a pause, an edit or a deletion is seen between rounds)."""
    if drain_options(r) is None:
        return
    recorded = r.recorded.get(name)
    op = r.leaving_ops.get(name) or (recorded.operation if recorded is not None else None)
    if op is None or op.kind != "Drain" or op.action != REMOVE:
        op = node_ops.drain_step(r, REMOVE)
    left = await node_ops.drain_round(r, name, op, kubeconfig)
    r.leaving_ops[name] = left
    if left is not None:
        raise errors.NotYet(node_ops.POLL_S, "Draining", f"draining node {name} before its removal")


async def upgrade_node(
    r: ClusterPass,
    name: str,
    target_version: str,
    *,
    kubeconfig: str,
    private_key: str,
    settings: install.K3sSettings,
) -> None:
    """Move the node's upgrade on (:mod:`node_ops`: drain, installer as a guest job, Ready, uncordon).
    Returns when the node is done; raises NotYet while a step is in flight."""
    action = Upgrade(target_version, private_key, settings)
    await node_ops.advance(r, name, action, kubeconfig=kubeconfig, private_key=private_key)
    view = r.views[name]
    view.state, view.ready, view.message = "Ready", True, None
    r.event("Normal", "Upgraded", f"Node {name} is Ready at {target_version}")


async def remove_member(
    r: ClusterPass,
    surplus: Surplus,
    child: ProxmoxVM,
    *,
    kubeconfig: str | None,
    in_cluster: bool,
    private_key: str,
) -> None:
    """Drain, delete the Node (a server leaves etcd), uninstall K3s, then delete the ProxmoxVM child
    (which applies its deletion policy to the VM)."""
    name, role = surplus.name, surplus.role
    r.event("Normal", "RemovingNode", f"Removing {role} {name}: the spec no longer wants it")
    if kubeconfig is not None and in_cluster:
        await drain_leaving(r, kubeconfig, name)
        if await r.deps.target.delete_node(kubeconfig, name):
            r.event("Normal", "NodeDeleted", f"Deleted node {name} from the cluster")
    await _uninstall(r, surplus, child, private_key)
    if r.status.init_server == name:
        servers = [v.name for v in r.views.values() if v.role == "server" and v.k3s_version]
        r.status.init_server = servers[0] if servers else None
    await r.deps.objects.delete_child(r.ref.namespace, name)
    r.event("Normal", "VMRemoved", f"Deleted ProxmoxVM {name}; its deletion policy decides the VM's fate")


async def _uninstall(r: ClusterPass, surplus: Surplus, child: ProxmoxVM, private_key: str) -> None:
    name = surplus.name
    recorded = r.recorded.get(name)
    addresses = child.status.addresses
    ip = (recorded.ip if recorded else None) or (addresses[0] if addresses else None)
    vmid = child.status.vmid or (recorded.vmid if recorded else None)
    pin = r.hostkeys.pin(name, ip or "", vmid, recorded) if ip else None
    if not ip or not pin:
        r.event(
            "Warning",
            "UninstallSkipped",
            f"K3s left on {name}: no pinned host key or address to log in with; run "
            f"{UNINSTALL[surplus.role]} there by hand if the VM is kept",
        )
        return
    ssh = r.spec.ssh
    target = build_target(ssh, ip, private_key, pin)
    script = UNINSTALL[surplus.role]
    start = time.perf_counter()
    try:
        result = await r.deps.ssh.run(
            target, f"if [ -x {script} ]; then {script}; fi", timeout_s=float(ssh.command_timeout_seconds)
        )
    except errors.K3sDeployError as exc:
        metrics.observe_ssh("uninstall_k3s", time.perf_counter() - start, ok=False)
        if not isinstance(exc, errors.SshUnavailable):
            raise
        r.event("Warning", "UninstallSkipped", f"K3s left on {name}: {exc.message}")
        return
    metrics.observe_ssh("uninstall_k3s", time.perf_counter() - start, ok=result.ok)
    if not result.ok:
        r.event(
            "Warning",
            "UninstallFailed",
            f"{script} on {name} exited {result.exit_status}: {result.stderr.strip()[-300:]}",
        )
        return
    r.event("Normal", "Uninstalled", f"Uninstalled K3s from {name}")


async def advance(
    r: ClusterPass,
    states: list[upgrade.NodeState],
    target: str,
    *,
    kubeconfig: str,
    private_key: str,
    settings: install.K3sSettings,
) -> bool:
    """One step of the rollout to ``target`` (a batch, or a decision to wait). True: end the pass."""
    k3s = r.spec.k3s
    todo = upgrade.pending(states, target)
    if todo:
        versions.check_downgrade(target, [n.version for n in todo], allowed=k3s.allow_downgrade)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    progress = upgrade.begin(upgrade.Progress.from_status(as_dict(r.old.upgrade)), states, target, now=now)
    previous = condition(r.old.conditions, UP_TO_DATE)
    retry = (
        previous is not None
        and previous.reason == "UpgradeFailed"
        and previous.observed_generation != r.generation
    )
    policy = upgrade.Policy(r.spec.upgrade.agent_concurrency, paused=r.spec.paused, retry_failed=retry)
    step = upgrade.next_step(states, target, progress, policy)
    if progress.state:
        r.status.upgrade = to_model(UpgradeStatus, progress.as_status())
    if step.kind == "none":
        return False
    if step.kind == "done":
        done = dataclasses.replace(progress, state=upgrade.COMPLETE, current=(), finished_time=now)
        r.status.upgrade = to_model(UpgradeStatus, done.as_status())
        r.event("Normal", "UpgradeComplete", f"Every node runs {target}")
        return False
    if step.kind == "failed":
        message = step.message + "; fix the node, then change the spec (any field) to retry"
        r.conditions.set(UP_TO_DATE, False, "UpgradeFailed", message)
        raise errors.PermanentError(message, reason="UpgradeFailed")
    done_count = len([s for s in states if s.version == target])
    summary = f"upgrading to {target}: {done_count}/{len(states)} nodes done"
    r.status.phase = "Upgrading"
    r.conditions.set(UP_TO_DATE, False, "Upgrading", summary + (f"; {step.message}" if step.message else ""))
    r.conditions.reconciling(True, "Upgrading", step.message or summary)
    if step.kind in ("paused", "wait"):
        return True
    if not progress.current and progress.state == upgrade.PROGRESSING and not progress.completed:
        r.event("Normal", "UpgradeStarted", f"Rolling upgrade from {progress.from_version} to {target}")
    progress = dataclasses.replace(progress, state=upgrade.PROGRESSING, current=step.nodes, failed_node=None)
    r.status.upgrade = to_model(UpgradeStatus, progress.as_status())
    await r.flush()
    results = await _gather(
        [
            upgrade_node(
                r,
                name,
                target,
                kubeconfig=kubeconfig,
                private_key=private_key,
                settings=settings,
            )
            for name in step.nodes
        ]
    )
    waits = [(n, e) for n, e in zip(step.nodes, results, strict=True) if isinstance(e, errors.NotYet)]
    failed = [
        (n, e) for n, e in zip(step.nodes, results, strict=True) if isinstance(e, errors.K3sDeployError)
    ]
    completed = tuple(
        dict.fromkeys(
            [*progress.completed, *(n for n, e in zip(step.nodes, results, strict=True) if e is None)]
        )
    )
    if not failed:
        busy = tuple(n for n, _ in waits)
        r.status.upgrade = to_model(
            UpgradeStatus, dataclasses.replace(progress, current=busy, completed=completed).as_status()
        )
        if waits:  # long work in flight: recorded in status, looked at again (never awaited here)
            wait = min(waits, key=lambda w: w[1].after_s or 0.0)[1]
            raise errors.NotYet(wait.after_s, "Upgrading", summary + f"; {wait.message}")
        await r.flush()
        return True
    name, exc = failed[0]
    assert isinstance(exc, errors.K3sDeployError)
    if exc.transient and exc.reason != "DrainTimeout":
        r.status.upgrade = to_model(
            UpgradeStatus, dataclasses.replace(progress, completed=completed).as_status()
        )
        raise exc
    r.views[name].state, r.views[name].message = "Failed", exc.message
    r.views[name].operation = None  # a retry starts the node's work again
    stopped = dataclasses.replace(
        progress,
        state=upgrade.FAILED,
        current=(),
        completed=completed,
        failed_node=name,
        finished_time=now,
    )
    r.status.upgrade = to_model(UpgradeStatus, stopped.as_status())
    message = f"the upgrade to {target} stopped at node {name}: {exc.message}"
    r.conditions.set(UP_TO_DATE, False, "UpgradeFailed", message[:2000])
    error = errors.PermanentError(message, reason="UpgradeFailed")
    r.conditions.from_error(error)  # the flushed status says Stalled with the Failed state, never one alone
    await r.flush()
    raise error


async def _gather(coros: list[Any]) -> list[errors.K3sDeployError | errors.NotYet | None]:
    """Run node work together; each outcome is None (done), NotYet (in flight) or its error (other
    errors propagate)."""

    results = await asyncio.gather(*coros, return_exceptions=True)
    out: list[errors.K3sDeployError | errors.NotYet | None] = []
    for result in results:
        if isinstance(result, errors.K3sDeployError | errors.NotYet):
            out.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            out.append(None)
    return out
