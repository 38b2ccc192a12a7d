"""The Reconfigure action: put a node's K3s settings files in place and restart K3s.

A per-node action with a small interface (node target, files, restart command) so it slots into a
node operation of the form Drain -> Action -> WaitReady -> Uncordon. ``apply`` is the action;
``commit`` records the applied digest on the node once it is Ready again, so the node itself says
what it runs (a status wiped or an operator restarted re-reads it and starts no rollout). The
files go over the SSH channel's stdin; neither their contents nor the script reach a log, an Event
or status (registries.yaml holds credentials).
"""

from __future__ import annotations

from dataclasses import dataclass

from k3s_deploy import errors, metrics
from k3s_deploy.ports.ssh import SshRunner, SshTarget, guest_text
from k3s_deploy.services.k3scluster import node_config
from k3s_deploy.services.k3scluster.nodes import with_node

SERVICES = {"server": "k3s", "agent": "k3s-agent"}


@dataclass(frozen=True)
class Reconfigure:
    node: str
    target: SshTarget
    files: node_config.NodeFiles
    service: str = "k3s"

    @property
    def restart_command(self) -> str:
        return f"systemctl restart {self.service}"

    def script(self) -> str:
        return "\n".join(["set -eu", *node_config.files_script(self.files), self.restart_command]) + "\n"

    async def apply(self, ssh: SshRunner, *, timeout_s: float) -> None:
        """Write the files and restart K3s; K3s refusing to start is a permanent error that says where
        to look (a wrong argument stays wrong until the spec changes)."""
        with metrics.time_ssh("reconfigure_k3s"):
            try:
                result = await ssh.run(self.target, "sh -s", input=self.script(), timeout_s=timeout_s)
            except errors.K3sDeployError as exc:
                raise with_node(self.node, exc) from exc
        if not result.ok:
            raise self.failed(result.exit_status, guest_text(result.stderr or result.stdout, 300))

    def failed(self, exit_status: int | None, said: str) -> errors.PermanentError:
        return errors.PermanentError(
            f"node {self.node}: {self.restart_command} failed after writing the new K3s settings "
            f"(exit {exit_status}): {said}; check spec.k3s serverArgs/agentArgs/registries "
            f"and journalctl -u {self.service} on the node",
            reason="ReconfigureFailed",
        )

    async def commit(self, ssh: SshRunner, *, timeout_s: float) -> None:
        try:
            await ssh.run(
                self.target,
                "sh -s",
                input=node_config.digest_script(self.files.digest),
                timeout_s=timeout_s,
                check=True,
            )
        except errors.K3sDeployError as exc:
            raise with_node(self.node, exc) from exc
