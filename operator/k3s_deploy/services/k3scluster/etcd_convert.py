"""Growing a one-server cluster: convert its server from SQLite to embedded etcd before others join.

A single server is installed without ``--cluster-init`` (K3s then keeps its data in SQLite), and a
server cannot join it. K3s converts such a server when it starts again with ``cluster-init: true``;
the operator writes that as a ``config.yaml.d`` drop-in (it stays, so later restarts and upgrades keep
etcd) and restarts K3s. That restart and the wait for etcd run as the detached guest job ``Convert``
(:mod:`node_ops`, recorded in ``status.nodes[].operation``): a pass starts it or looks at it once and
returns, so a pause or a deletion is seen within seconds. Whether the server runs etcd is read back
from the node (the probe), never from status; the job is named after its work, so it never runs twice.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import access, guest_jobs, install, node_ops, nodes
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView

DROP_IN = "/etc/rancher/k3s/config.yaml.d/00-k3s-deploy-embedded-etcd.yaml"
WAIT_SECONDS = 180
TARGET = "embedded-etcd"


def needed(plan: install.InstallPlan, r: ClusterPass) -> str | None:
    """The anchor server to convert: servers are to join it, it runs K3s without embedded etcd, and
    it is not reinstalled first in this plan (that reinstall carries ``--cluster-init`` already)."""
    anchor = _anchor(plan, r)
    if anchor is None or r.views[anchor].embedded_etcd:
        return None
    return anchor


def _anchor(plan: install.InstallPlan, r: ClusterPass) -> str | None:
    anchor = plan.anchor
    if not plan.server_joins or anchor is None or any(s.node == anchor for s in plan.first):
        return None
    view = r.views.get(anchor)
    return anchor if view is not None and view.server_up else None


def script() -> str:
    """Write the drop-in atomically, restart K3s, wait for etcd's member file and a ready API."""
    target = shlex.quote(DROP_IN)
    return "\n".join(
        [
            "set -eu",
            "umask 077",
            "mkdir -p /etc/rancher/k3s/config.yaml.d",
            f"printf 'cluster-init: true\\n' > {target}.tmp",
            f"mv -f {target}.tmp {target}",
            "systemctl restart k3s",
            "i=0",
            f"until test -e {install.EMBEDDED_ETCD_FILE} && k3s kubectl get --raw /readyz >/dev/null 2>&1; do",
            "  i=$((i+1))",
            f"  if [ $i -gt {WAIT_SECONDS} ]; then echo 'embedded etcd did not come up after the restart' >&2; "
            "exit 1; fi",
            "  sleep 1",
            "done",
            "",
        ]
    )


def job_of(node: str) -> str:
    """The conversion's job id, as :func:`node_ops.run_change` names it (the work, not the attempt)."""
    return guest_jobs.job_id("convert", node, TARGET)


@dataclass(frozen=True)
class Convert:
    """The conversion as node work: no drain (the lone server), no Node to wait for (the joins that
    follow need etcd and the API, which the job waits for)."""

    private_key: str
    version: str
    name: Literal["Convert"] = "Convert"
    state: Literal["Converting"] = "Converting"
    metric: Literal["convert_etcd"] = "convert_etcd"
    target: str = TARGET

    @property
    def ready_version(self) -> str:
        return self.version

    def applied(self, view: NodeView) -> bool:
        return view.embedded_etcd

    async def start(self, r: ClusterPass, view: NodeView, job: str) -> guest_jobs.Started:
        r.event(
            "Normal",
            "ConvertingToEmbeddedEtcd",
            f"Restarting {view.name} with cluster-init: servers are joining",
        )
        target = access.node_target(r, view, self.private_key)
        try:
            return await guest_jobs.start(
                r.deps.ssh, target, job, script(), timeout_s=float(r.spec.ssh.command_timeout_seconds)
            )
        except errors.K3sDeployError as exc:
            raise nodes.with_node(view.name, exc) from exc

    async def finish(self, r: ClusterPass, view: NodeView, job: guest_jobs.JobState) -> None:
        if job.rc != 0:
            raise errors.K3sInstallFailed(
                f"node {view.name}: the conversion to embedded etcd failed (exit {job.rc}): {job.tail}"
            )
        target = access.node_target(r, view, self.private_key)
        after = await nodes.probe(
            r.deps.ssh, view.name, target, timeout_s=float(r.spec.ssh.command_timeout_seconds)
        )
        if not after.embedded_etcd:
            raise errors.K3sInstallFailed(f"node {view.name}: still without embedded etcd after the restart")
        view.embedded_etcd = True
        r.event("Normal", "ConvertedToEmbeddedEtcd", f"{view.name} runs embedded etcd; servers can join")


async def ensure(r: ClusterPass, plan: install.InstallPlan, private_key: str) -> None:
    """Start or look at the anchor's conversion; NotYet while it runs, ``K3sInstallFailed`` on that
    node when it failed. A node that runs etcd already is left alone unless a conversion is still
    running there (its record lost with the status): the joins wait for it."""
    name = _anchor(plan, r)
    if name is None:
        return
    view = r.views[name]
    action = Convert(private_key, view.k3s_version or "")
    op = view.operation
    recorded = op is not None and op.action == action.name
    if view.embedded_etcd and not recorded:
        if any(v.role == "server" and v.name != name and v.k3s_version for v in r.views.values()):
            return  # a server joined it: any conversion there ended (no look on every pass of a growth)
        look = await guest_jobs.poll(
            r.deps.ssh,
            access.node_target(r, view, private_key),
            job_of(name),
            timeout_s=float(r.spec.ssh.command_timeout_seconds),
        )
        if not look.running and look.rc is None:
            return
    r.conditions.reconciling(True, "ConvertingToEmbeddedEtcd", f"converting {name} to embedded etcd")
    try:
        await node_ops.run_change(r, name, action, private_key=private_key)
    except errors.K3sDeployError as exc:
        if not exc.transient:
            view.operation = None  # failed: the next pass starts afresh
        view.message = exc.message
        raise
    view.state, view.message = "Installed", None
