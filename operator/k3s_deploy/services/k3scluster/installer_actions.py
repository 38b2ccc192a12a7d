"""The K3s installer as node work (:mod:`node_ops`): ``Install`` (a member's first install, or a
reinstall) and ``Upgrade`` (re-run at the target version) start the installer as a detached job on the
guest; a later pass checks the exit code and what K3s reports there."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import access, airgap, endpoint, guest_jobs, install, nodes
from k3s_deploy.services.k3scluster.access import node_target
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView

_WHAT = {
    "init": "initialising the cluster",
    "single": "single server",
    "join-server": "joining as server",
    "agent": "joining as agent",
}


async def _start(
    r: ClusterPass,
    view: NodeView,
    job: str,
    step: install.InstallStep,
    settings: install.K3sSettings,
    private_key: str,
    sans: list[str],
) -> guest_jobs.Started:
    target = node_target(r, view, private_key)
    timeout = float(r.spec.ssh.command_timeout_seconds)
    staged = await airgap.stage(
        r.deps.ssh, r.deps.artefacts, view.name, target, settings.source, timeout_s=timeout
    )
    script = await access.install_script(r, step, settings, private_key, sans=sans, installer_path=staged)
    try:
        return await guest_jobs.start(r.deps.ssh, target, job, script, timeout_s=timeout)
    except errors.K3sDeployError as exc:
        raise nodes.with_node(view.name, exc) from exc


async def _finished(
    r: ClusterPass, view: NodeView, job: guest_jobs.JobState, private_key: str
) -> nodes.Probe:
    """The installer's exit code as the error tree has it, then what the node runs now."""
    if job.rc == install.DOWNLOAD_FAILED:
        raise errors.TransientError(
            f"node {view.name}: could not download the K3s installer: {job.tail}",
            reason="InstallerDownloadFailed",
        )
    if job.rc != 0:
        raise errors.K3sInstallFailed(
            f"node {view.name}: the K3s installer failed (exit {job.rc}): {job.tail}. Check spec.k3s "
            "(version, arguments, install source)."
        )
    target = node_target(r, view, private_key)
    return await nodes.probe(
        r.deps.ssh, view.name, target, timeout_s=float(r.spec.ssh.command_timeout_seconds)
    )


@dataclass(frozen=True)
class Install:
    """A member's install as the bootstrap plans it (``step``); health() waits for its Node."""

    step: install.InstallStep
    settings: install.K3sSettings
    private_key: str
    sans: tuple[str, ...] = ()
    name: Literal["Install"] = "Install"
    state: Literal["Installing"] = "Installing"
    metric: Literal["install_k3s"] = "install_k3s"

    @property
    def target(self) -> str:
        return self.settings.version or (self.settings.channel or install.DEFAULT_CHANNEL)

    @property
    def ready_version(self) -> str:
        return self.settings.version or ""

    def applied(self, view: NodeView) -> bool:
        return False  # the plan lists only members that need the install

    async def start(self, r: ClusterPass, view: NodeView, job: str) -> guest_jobs.Started:
        r.event("Normal", "Installing", f"Installing K3s on {view.name} ({_WHAT[self.step.kind]})")
        if self.step.role == "server":  # before K3s starts there: the first server brings kube-vip up
            await endpoint.place(r, view, node_target(r, view, self.private_key))
        return await _start(r, view, job, self.step, self.settings, self.private_key, list(self.sans))

    async def finish(self, r: ClusterPass, view: NodeView, job: guest_jobs.JobState) -> None:
        after = await _finished(r, view, job, self.private_key)
        view.k3s_version, view.server_up = after.installed_version, after.server_up
        view.embedded_etcd, view.config_digest = after.embedded_etcd, after.config_digest


@dataclass(frozen=True)
class Upgrade:
    target: str
    private_key: str
    settings: install.K3sSettings
    name: Literal["Upgrade"] = "Upgrade"
    state: Literal["Upgrading"] = "Upgrading"
    metric: Literal["upgrade_k3s"] = "upgrade_k3s"

    @property
    def ready_version(self) -> str:
        return self.target

    def applied(self, view: NodeView) -> bool:
        return view.k3s_version == self.target

    async def start(self, r: ClusterPass, view: NodeView, job: str) -> guest_jobs.Started:
        wanted = dataclasses.replace(self.settings, version=self.target)
        facts = [install.NodeFacts(v.name, v.role, v.ip, v.k3s_version) for v in r.views.values()]
        plan = install.plan(facts, wanted, init_server=r.status.init_server)
        step = next(s for s in plan.steps if s.node == view.name)
        sans = install.tls_sans(wanted, [v.ip for v in r.views.values() if v.role == "server" and v.ip])
        r.event("Normal", "Upgrading", f"Upgrading node {view.name} from {view.k3s_version} to {self.target}")
        return await _start(r, view, job, step, wanted, self.private_key, sans)

    async def finish(self, r: ClusterPass, view: NodeView, job: guest_jobs.JobState) -> None:
        after = await _finished(r, view, job, self.private_key)
        view.k3s_version, view.config_digest = after.installed_version, after.config_digest
        if after.installed_version != self.target:
            raise errors.K3sInstallFailed(
                f"node {view.name}: K3s reports {after.installed_version} after the upgrade to {self.target}"
            )
