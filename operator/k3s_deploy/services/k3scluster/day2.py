"""Day-2 operations inside a reconcile pass: cluster power, scale-down, rolling upgrade, drift and the
version check. The reconciler calls these hooks at fixed points of its pass; the planning is pure
(power, scaling, upgrade, versions, channels) and the node work is in :mod:`rollout`.

Order inside a pass: children (surplus noted, power states shaped) -> power -> VMs -> SSH probes ->
version check, drift, scale-down, rollout -> bootstrap of new members -> health -> UpToDate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from k3s_deploy import errors
from k3s_deploy.api.common import condition
from k3s_deploy.api.k3scluster_status import ChannelResolution, ClusterNode, UpgradeStatus
from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.services.k3scluster import (
    channels,
    guest_values,
    install,
    power,
    rollout,
    scaling,
    settings_rollout,
    upgrade,
    versions,
)
from k3s_deploy.services.k3scluster.access import kubeconfig as access_kubeconfig
from k3s_deploy.services.k3scluster.desired import Desired
from k3s_deploy.services.k3scluster.rollout import UP_TO_DATE
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView, as_dict, to_model
from k3s_deploy.services.k3scluster.topology import LABEL_ROLE, ClusterRef, owned_by

NODES_IN_SYNC = "NodesInSync"
POWERED_ON = "PoweredOn"
# status.nodes[].state of a member whose VM was destroyed outside, until its new VM is reachable
VM_REPLACED: Final = "VMReplaced"
STOP_DELAY = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class Day2:
    """Per-pass day-2 state of one reconciler."""

    def __init__(self, r: ClusterPass) -> None:
        self.r = r
        self.surplus = r.surplus
        self.removed = r.removed
        self.children: dict[str, ProxmoxVM] = {}
        self.drift: list[tuple[str, str]] = []  # (reason, message)
        self.channel_problem: errors.K3sDeployError | None = None
        self.k3s_missing: list[str] = []
        self.replaced = r.replaced  # members on a new VM (the old one destroyed outside)

    # --- VMs destroyed outside ------------------------------------------------------------------------

    def vm_replaced(self, view: NodeView, recorded: ClusterNode | None) -> bool:
        """True when the member's VM is not the machine recorded in status: destroyed outside the
        operator (the ProxmoxVM lost it, or already cloned a new one). Nothing learned from the old
        machine carries over (host-key pin, K3s version); the loss is reported once, by name and vmid,
        and stays in NodesInSync until the member runs K3s again."""
        if recorded is None:
            return False
        old_vmid = recorded.vmid
        changed = old_vmid is not None and view.vmid != old_vmid
        if not changed and recorded.state != VM_REPLACED:
            return False
        if changed and not (recorded.host_key_fingerprint or recorded.k3s_version):
            return True  # a VM never reached yet (a clone redone): nothing learned, nothing lost
        if changed:
            how = "looks for it again" if view.adopted else "creates a new one"
            self.r.event(
                "Warning",
                "DriftDetected",
                f"VM {old_vmid} of node {view.name} is gone from Proxmox (destroyed outside the "
                f"operator); its ProxmoxVM {how} and the node rejoins the cluster",
            )
        self.replaced.add(view.name)
        gone = f" (VM {old_vmid})" if changed else ""
        self.drift.append(
            (
                "VMMissing",
                f"the VM of node {view.name}{gone} was destroyed outside the operator; rejoining it",
            )
        )
        return True

    def report_drift(self) -> None:
        """The pass ends before the nodes are looked at (VMs not ready): still say what drifted."""
        if self.drift:
            self._drift_condition()

    # --- children: surplus and power states ----------------------------------------------------------

    def prepare_children(self, want: Desired, existing: Mapping[str, ProxmoxVM]) -> None:
        """Note children the spec no longer wants; give each wanted child the power state of the plan."""
        ref: ClusterRef = self.r.ref
        for name, child in existing.items():
            if name in want.manifests or not owned_by({"metadata": child.metadata}, ref):
                continue
            if child.metadata.get("deletionTimestamp"):
                continue
            role = (child.metadata.get("labels") or {}).get(LABEL_ROLE)
            self.surplus[name] = (scaling.Surplus(name, "server" if role == "server" else "agent"), child)
        self.children = {m.name: existing[m.name] for m in want.members if m.name in existing}
        kids = []
        for member in want.members:
            found = existing.get(member.name)
            ready = condition(found.status.conditions, "Ready") if found else None
            kids.append(
                power.ChildPower(
                    member.name,
                    member.role,
                    wanted=found.spec.power_state if found else None,
                    observed=found.status.power_state if found else None,
                    ready=ready is not None and ready.status == "True",
                )
            )
        plan = self.r.power_plan = power.plan(self.r.spec.power_state, kids)
        for name, state in plan.states.items():
            want.manifests[name]["spec"]["powerState"] = state

    def power(self) -> None:
        """Stopped: stop agents, then servers, and end the pass (:class:`~k3s_deploy.errors.NotYet`).
        Running after Stopped: servers first."""
        r, plan = self.r, self.r.power_plan
        if plan is None:
            return
        if r.spec.power_state == "Stopped":
            r.status.phase = "Stopped" if plan.settled else "Stopping"
            for view in r.views.values():
                view.ready = False
                view.state = "Stopped" if self._observed(view.name) == "Stopped" else "Stopping"
                view.message = None
            for cond in ("ServersReady", "AgentsReady"):
                r.conditions.set(cond, False, "ClusterStopped", "spec.powerState is Stopped")
            r.conditions.set(POWERED_ON, False, "Stopped" if plan.settled else "Stopping", plan.message)
            r.conditions.reconciling(not plan.settled, "Stopping", plan.message)
            r.conditions.stalled(False)
            if not plan.settled and r.old.phase != "Stopping":
                r.event("Normal", "Stopping", "Stopping the cluster: agents first, then servers")
            if plan.settled and r.old.phase != "Stopped":
                r.event("Normal", "Stopped", plan.message)
            raise errors.NotYet(None if plan.settled else STOP_DELAY, "Stopping", plan.message)
        if not plan.settled:
            r.status.phase = "Starting"
            r.conditions.set(POWERED_ON, False, "Starting", plan.message)
            r.conditions.reconciling(True, "Starting", plan.message)
            if r.old.phase != "Starting":
                r.event("Normal", "Starting", "Starting the cluster: servers first, then agents")
            raise errors.NotYet(STOP_DELAY, "Starting", plan.message)
        stopped = [n for n in r.views if self._observed(n) == "Stopped"]
        if stopped:
            names = ", ".join(stopped[:5])
            self.drift.append(
                ("VMStopped", f"VM(s) {names} stopped outside the operator; starting them again")
            )
            r.conditions.set(POWERED_ON, False, "VMStopped", f"VM(s) {names} are stopped")
        else:
            r.conditions.set(POWERED_ON, True, "Running", f"all {len(r.views)} VMs are running")

    def _observed(self, name: str) -> str | None:
        child = self.children.get(name)
        return child.status.power_state if child is not None and child.status.power_state else None

    def paused(self) -> None:
        """spec.paused: a rollout shows as Paused once no node is in flight (it halts between nodes)."""
        progress = upgrade.Progress.from_status(as_dict(self.r.status.upgrade))
        if progress.state == upgrade.PROGRESSING:
            paused = dataclasses.replace(progress, state=upgrade.PAUSED)
            self.r.status.upgrade = to_model(UpgradeStatus, paused.as_status())

    # --- between the SSH probes and the bootstrap ---------------------------------------------------

    async def before_bootstrap(self, private_key: str, settings: install.K3sSettings) -> bool:
        """Version check, drift, scale-down and the rollout. True: end the pass (work in flight)."""
        r = self.r
        resolution = await self._version_check()
        self._k3s_drift()
        formed = any(v.role == "server" and v.k3s_version for v in r.views.values())
        if not formed:
            for name in self.surplus:
                await r.deps.objects.delete_child(r.ref.namespace, name)
                self.removed.add(name)
                r.event("Normal", "VMRemoved", f"Deleted ProxmoxVM {name}: the spec no longer wants it")
            self._drift_condition()
            return False
        target = self._target(resolution)
        progress = upgrade.Progress.from_status(as_dict(r.old.upgrade))
        rolling = target is not None and bool(
            progress.current or upgrade.pending(self._states({}), target) or progress.state == upgrade.FAILED
        )
        was_ready = any(n.ready for v in r.views.values() if (n := r.recorded.get(v.name)) is not None)
        if not (self.surplus or rolling or was_ready or self.replaced):
            self._drift_condition()
            return False
        kubeconfig = await access_kubeconfig(r, private_key)
        try:
            found = {n.name: n for n in guest_values.target_nodes(await r.deps.target.nodes(kubeconfig))}
        except errors.KubeUnavailable:
            if self.surplus or rolling:
                raise
            self._drift_condition()
            return False
        self._missing_nodes(found)
        await self._forget_stale_nodes(kubeconfig, found)
        self._drift_condition()
        if self.surplus and await self._scale_down(kubeconfig, found, private_key):
            return True
        if target is not None and await rollout.advance(
            r,
            self._states(found),
            target,
            kubeconfig=kubeconfig,
            private_key=private_key,
            settings=settings,
        ):
            return True
        return await settings_rollout.advance(
            r, found, kubeconfig=kubeconfig, private_key=private_key, settings=settings
        )

    def _target(self, resolution: channels.Resolution | None) -> str | None:
        k3s = self.r.spec.k3s
        return upgrade.target_version(
            pinned=k3s.version,
            channel_version=resolution.version if resolution else None,
            auto_upgrade=k3s.auto_upgrade,
        )

    def _states(self, found: Mapping[str, Any]) -> list[upgrade.NodeState]:
        return [
            upgrade.NodeState(v.name, v.role, v.k3s_version, bool(found.get(v.name) and found[v.name].ready))
            for v in self.r.views.values()
        ]

    async def _version_check(self) -> channels.Resolution | None:
        r = self.r
        server = r.deps.channels
        if server is None:
            return None
        k3s = r.spec.k3s
        channel = k3s.channel or channels.DEFAULT_CHANNEL
        try:
            res = await channels.resolve(
                server,
                k3s.channel_server,
                channel,
                previous=as_dict(r.old.channel_resolution),
                now=_now(),
                ttl=timedelta(seconds=r.deps.channel_check_seconds),
            )
        except errors.K3sDeployError as exc:
            if k3s.channel and k3s.auto_upgrade and not exc.transient:
                raise
            self.channel_problem = exc
            return None
        r.status.channel_resolution = to_model(ChannelResolution, res.as_status())
        r.status.available_version = res.version
        return res

    def _k3s_drift(self) -> None:
        for view in self.r.views.values():
            recorded = self.r.recorded.get(view.name)
            if view.name in self.replaced or recorded is None:
                continue
            if view.k3s_version is None and recorded.k3s_version and recorded.ready:
                self.k3s_missing.append(view.name)
                self.drift.append(("K3sMissing", f"K3s is gone from {view.name}; installing it again"))
                self.r.event(
                    "Warning", "DriftDetected", f"K3s is no longer installed on {view.name}; reinstalling"
                )

    async def _forget_stale_nodes(self, kubeconfig: str, found: dict[str, Any]) -> None:
        """A member that does not run K3s (removed by hand, or its VM re-created) but still has a Node:
        that Node is stale. Delete it before the install, as K3s wants for a node rejoining under the
        same name (its node-password Secret goes with it; a server's etcd member is removed, so it can
        join as a new member)."""
        for view in self.r.views.values():
            name = view.name
            if view.k3s_version is None and view.vm_ready and name in found:
                if await self.r.deps.target.delete_node(kubeconfig, name):
                    self.r.event("Normal", "NodeDeleted", f"Deleted the stale node {name} before it rejoins")
                del found[name]

    def _missing_nodes(self, found: Mapping[str, Any]) -> None:
        """A member that runs K3s and was Ready once, but whose Node is gone (deleted by hand): reinstall,
        which registers it again (real K3s re-registers when its service restarts)."""
        for view in self.r.views.values():
            recorded = self.r.recorded.get(view.name)
            if view.k3s_version and view.name not in found and recorded is not None and recorded.ready:
                self.drift.append(
                    ("NodeMissing", f"node {view.name} is missing from the cluster; rejoining it")
                )
                self.r.event(
                    "Warning", "DriftDetected", f"node {view.name} was removed from the cluster; rejoining"
                )
                view.k3s_version = None

    def _drift_condition(self) -> None:
        if self.drift:
            reason = self.drift[0][0]
            self.r.conditions.set(NODES_IN_SYNC, False, reason, "; ".join(m for _, m in self.drift)[:1000])
        else:
            self.r.conditions.set(NODES_IN_SYNC, True, "InSync", "every node is where the spec wants it")

    async def _scale_down(self, kubeconfig: str, found: dict[str, Any], private_key: str) -> bool:
        """Remove surplus members one by one; True when one must wait (servers not Ready)."""
        r = self.r
        r.status.phase = "Scaling"
        left = {name: s for name, (s, _) in self.surplus.items()}
        while left:
            staying = {
                v.name: bool(found.get(v.name) and found[v.name].ready)
                for v in r.views.values()
                if v.role == "server"
            }
            step = scaling.next_removal(list(left.values()), staying_servers=staying)
            if step.node is None:
                r.conditions.reconciling(True, "ScalingDown", step.message)
                return True
            child = self.surplus[step.node.name][1]
            await rollout.remove_member(
                r,
                step.node,
                child,
                kubeconfig=kubeconfig,
                in_cluster=step.node.name in found,
                private_key=private_key,
            )
            del left[step.node.name]
            self.removed.add(step.node.name)
            await r.flush()
            if step.node.role == "server":
                found = {n.name: n for n in guest_values.target_nodes(await r.deps.target.nodes(kubeconfig))}
        return False

    # --- after health ----------------------------------------------------------------------------------

    def after_health(self) -> None:
        """The cluster is Ready: drift repaired in this pass is in sync again; the version check as UpToDate."""
        r = self.r
        if self.drift and all(
            reason in ("K3sMissing", "NodeMissing", "VMMissing") for reason, _ in self.drift
        ):
            repaired = "; ".join(m for _, m in self.drift)[:1000]
            r.conditions.set(NODES_IN_SYNC, True, "Repaired", f"repaired: {repaired}")
        lowest = r.status.k3s_version
        available = r.status.available_version
        channel = r.spec.k3s.channel or channels.DEFAULT_CHANNEL
        if self.channel_problem is not None:
            r.conditions.set(UP_TO_DATE, "Unknown", self.channel_problem.reason, self.channel_problem.message)
        elif lowest and available and versions.newer(available, lowest):
            how = (
                "autoUpgrade rolls it out"
                if r.spec.k3s.auto_upgrade
                else "set spec.k3s.version to it to upgrade"
            )
            r.conditions.set(
                UP_TO_DATE,
                False,
                "UpdateAvailable",
                f"K3s {available} is available on channel {channel}; the cluster runs {lowest} ({how})",
            )
        elif lowest:
            where = f", the newest on channel {channel}" if available else ""
            r.conditions.set(UP_TO_DATE, True, "UpToDate", f"every node runs {lowest}{where}")
