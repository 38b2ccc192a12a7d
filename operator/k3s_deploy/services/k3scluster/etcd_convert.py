"""Growing a one-server cluster: convert its server from SQLite to embedded etcd before others join.

A single server is installed without ``--cluster-init`` (K3s then keeps its data in SQLite), and a
server cannot join it. K3s converts such a server when it starts again with ``cluster-init: true``;
the operator writes that as a ``config.yaml.d`` drop-in (it stays, so later restarts and upgrades keep
etcd) and restarts K3s, waits until etcd runs and the API answers, then lets the joins go. Nothing is
reinstalled, and a cluster that never grows keeps its lighter SQLite datastore.
"""

from __future__ import annotations

import shlex

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import access, install, nodes
from k3s_deploy.services.k3scluster.state import ClusterPass

DROP_IN = "/etc/rancher/k3s/config.yaml.d/00-k3s-deploy-embedded-etcd.yaml"
WAIT_SECONDS = 180


def needed(plan: install.InstallPlan, r: ClusterPass) -> str | None:
    """The anchor server to convert: servers are to join it, it runs K3s without embedded etcd, and
    it is not reinstalled first in this plan (that reinstall carries ``--cluster-init`` already)."""
    anchor = plan.anchor
    if not plan.server_joins or anchor is None or any(s.node == anchor for s in plan.first):
        return None
    view = r.views.get(anchor)
    if view is None or not view.server_up or view.embedded_etcd:
        return None
    return anchor


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


async def ensure(r: ClusterPass, plan: install.InstallPlan, private_key: str) -> None:
    """Convert the anchor when :func:`needed` says so; a failure is ``K3sInstallFailed`` on that node."""
    name = needed(plan, r)
    if name is None:
        return
    view = r.views[name]
    r.event("Normal", "ConvertingToEmbeddedEtcd", f"Restarting {name} with cluster-init: servers are joining")
    r.conditions.reconciling(True, "ConvertingToEmbeddedEtcd", f"converting {name} to embedded etcd")
    target = access.node_target(r, view, private_key)
    timeout = float(r.spec.ssh.command_timeout_seconds)
    try:
        await nodes.run_install(r.deps.ssh, name, target, script(), timeout_s=timeout)
    except errors.K3sDeployError as exc:
        view.message = exc.message
        raise
    after = await nodes.probe(r.deps.ssh, name, target, timeout_s=timeout)
    if not after.embedded_etcd:
        raise errors.K3sInstallFailed(f"node {name}: still without embedded etcd after the restart")
    view.embedded_etcd = True
    r.event("Normal", "ConvertedToEmbeddedEtcd", f"{name} runs embedded etcd; servers can join")
