"""Rolling changed K3s settings (arguments, SANs, registries, the join URL) through the existing nodes.

A node whose digest file (read back by the probe) differs from the digest of the files the spec
renders for it is out of date. Order and pacing are the upgrade's (:func:`upgrade.next_step`): servers
first, one at a time and only while the other servers are Ready, then agents, here one at a time.
Each pass handles at most one node: drain, :class:`~reconfigure.Reconfigure` (files + restart), wait
Ready, uncordon, record the digest on the node. Nothing is kept in memory between passes: a node
interrupted half-way still has its old digest and is done again from the start.
"""

from __future__ import annotations

from collections.abc import Mapping

from k3s_deploy.ports.target import TargetNode
from k3s_deploy.services.k3scluster import endpoint, install, node_ops, reconfigure, upgrade
from k3s_deploy.services.k3scluster.access import node_target
from k3s_deploy.services.k3scluster.settings_action import ReconfigureAction
from k3s_deploy.services.k3scluster.state import ClusterPass

APPLIED, STALE = "applied", "stale"


def states(
    r: ClusterPass, found: Mapping[str, TargetNode], settings: install.K3sSettings
) -> list[upgrade.NodeState]:
    """Each member as the upgrade planner sees it, the digest standing in for the version."""
    out = []
    for v in r.views.values():
        files = settings.node_files.get(v.name)
        wanted = files is None or v.config_digest == files.digest
        node = found.get(v.name)
        out.append(
            upgrade.NodeState(
                v.name,
                v.role,
                (APPLIED if wanted else STALE) if v.k3s_version else None,
                bool(node and node.ready),
            )
        )
    return out


async def advance(
    r: ClusterPass,
    found: Mapping[str, TargetNode],
    *,
    kubeconfig: str,
    private_key: str,
    settings: install.K3sSettings,
) -> bool:
    """Reconfigure the next out-of-date node, if any. True: this pass did (or waits for) work."""
    if any(v.k3s_version is None for v in r.views.values()):
        return False  # members without K3s are the bootstrap's first (installing writes the files)
    nodes = states(r, found, settings)
    step = upgrade.next_step(nodes, APPLIED, upgrade.Progress(), upgrade.Policy(paused=r.spec.paused))
    left = len(upgrade.pending(nodes, APPLIED))
    if step.kind in ("wait", "paused"):
        r.conditions.reconciling(True, "Reconfiguring", step.message)
        return True
    if step.kind != "upgrade":
        return False
    busy = [v.name for v in r.views.values() if v.operation and v.operation.action == "Reconfigure"]
    name = busy[0] if busy else step.nodes[0]  # the node in flight first
    if not busy and r.views[name].role == "agent":
        # an agent restarts into its join URL: spec.endpoint must answer (with the servers' new SAN)
        await endpoint.answers(r, private_key)
    r.status.phase = "Reconfiguring"
    r.conditions.reconciling(
        True, "Reconfiguring", f"applying changed K3s settings: {name} ({left} node(s) left)"
    )
    await r.flush()
    await reconfigure_node(r, name, kubeconfig=kubeconfig, private_key=private_key, settings=settings)
    await r.flush()
    return True


async def reconfigure_node(
    r: ClusterPass, name: str, *, kubeconfig: str, private_key: str, settings: install.K3sSettings
) -> None:
    """Drain -> Reconfigure -> WaitReady -> Uncordon as node work recorded in status (:mod:`node_ops`;
    NotYet while a step is in flight), then the digest onto the node."""
    view = r.views[name]
    timeout = float(r.spec.ssh.command_timeout_seconds)
    change = reconfigure.Reconfigure(
        name, node_target(r, view, private_key), settings.node_files[name], reconfigure.SERVICES[view.role]
    )
    action = ReconfigureAction(change, view.k3s_version or "")
    await node_ops.advance(r, name, action, kubeconfig=kubeconfig, private_key=private_key)
    await change.commit(r.deps.ssh, timeout_s=timeout)
    view.config_digest = change.files.digest
    view.state, view.ready, view.message = "Ready", True, None
    r.event("Normal", "Reconfigured", f"Node {name} runs with the new K3s settings and is Ready")
