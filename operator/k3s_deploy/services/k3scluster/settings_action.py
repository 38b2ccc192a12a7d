"""The Reconfigure action of node work (:mod:`node_ops`): the settings files and the K3s restart of
:class:`~reconfigure.Reconfigure` run as a detached job on the guest; its exit code is read on a later
pass. The digest goes onto the node (``Reconfigure.commit``) once the node is Ready and uncordoned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import guest_jobs, nodes, reconfigure
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView


@dataclass(frozen=True)
class ReconfigureAction:
    change: reconfigure.Reconfigure
    version: str  # the node keeps its K3s version: Ready at it again after the restart
    name: Literal["Reconfigure"] = "Reconfigure"
    state: Literal["Reconfiguring"] = "Reconfiguring"
    metric: Literal["reconfigure_k3s"] = "reconfigure_k3s"

    @property
    def target(self) -> str:
        return self.change.files.digest

    @property
    def ready_version(self) -> str:
        return self.version

    def applied(self, view: NodeView) -> bool:
        return view.config_digest == self.change.files.digest

    async def start(self, r: ClusterPass, view: NodeView, job: str) -> guest_jobs.Started:
        c = self.change
        r.event("Normal", "Reconfiguring", f"Applying changed K3s settings to {c.node}: {c.restart_command}")
        timeout = float(r.spec.ssh.command_timeout_seconds)
        try:
            return await guest_jobs.start(r.deps.ssh, c.target, job, c.script(), timeout_s=timeout)
        except errors.K3sDeployError as exc:
            raise nodes.with_node(c.node, exc) from exc

    async def finish(self, r: ClusterPass, view: NodeView, job: guest_jobs.JobState) -> None:
        if job.rc != 0:
            raise self.change.failed(job.rc, job.tail)
