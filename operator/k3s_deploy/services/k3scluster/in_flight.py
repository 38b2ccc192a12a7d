"""``spec.paused`` with node work in flight: start nothing, but move the recorded work on to its end.

A node left cordoned half-way helps nobody, and a detached installer finishes on the guest anyway, so
a paused cluster keeps looking at the nodes whose ``status.nodes[].operation`` is set (one step per
pass, never waiting) until none is; ``status.upgrade.state`` turns Paused after that. Nothing else of
a pass runs: no child is created or changed, no member joins or leaves. The views come from status.
"""

from __future__ import annotations

from k3s_deploy.api.k3scluster_status import ClusterNode
from k3s_deploy.services.k3scluster import access, rollout, upgrade
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView


def busy(r: ClusterPass) -> list[str]:
    """Members in the middle of a rollout (a first install holds no node back: it waits unpaused)."""
    return [
        n.name
        for n in r.old.nodes
        if n.operation is not None and n.operation.action != "Install" and n.state != "Removing"
    ]


async def finish(r: ClusterPass) -> None:
    """Raises NotYet while recorded node work is in flight (or the error that stopped it)."""
    target = r.old.upgrade.to_version if r.old.upgrade is not None else None
    if not busy(r) or target is None:
        return
    private_key, _tokens = await access.secrets(r)
    settings = access.settings(r)
    await r.hostkeys.load()
    for node in r.old.nodes:
        if node.state != "Removing":
            r.views[node.name] = _view(node)
    kubeconfig = await access.kubeconfig(r, private_key)
    states = [upgrade.NodeState(v.name, v.role, v.k3s_version, v.ready) for v in r.views.values()]
    try:
        await rollout.advance(
            r, states, target, kubeconfig=kubeconfig, private_key=private_key, settings=settings
        )
    finally:
        r.status.phase = "Paused"


def _view(node: ClusterNode) -> NodeView:
    return NodeView(
        name=node.name,
        role=node.role,
        adopted=bool(node.adopted),
        vmid=node.vmid,
        pve_node=node.pve_node,
        ip=node.ip,
        vm_ready=True,
        host_key=node.host_key_fingerprint,
        k3s_version=node.k3s_version,
        ready=node.ready,
        state=node.state or "Pending",
        message=node.message,
        pool=node.pool,
        operation=node.operation,
    )
