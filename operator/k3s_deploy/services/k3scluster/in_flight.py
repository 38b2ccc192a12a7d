"""``spec.paused`` with node work in flight: start nothing, but move the recorded work on to its end.

A node left cordoned half-way helps nobody, and a detached installer finishes on the guest anyway, so
a paused cluster keeps looking at the nodes whose ``status.nodes[].operation`` is set (one step per
pass, never waiting) until none is; ``status.upgrade.state`` turns Paused after that. That is an
upgrade's node (the rollout's current batch) and a settings rollout's Reconfigure; a conversion to
embedded etcd cordons nothing and is read after the pause. Nothing else of a pass runs: no child is
created or changed, no member joins or leaves. The members dialled are verified against the
cluster's children first (:mod:`paused_trust`): status alone is never trusted with an address.
"""

from __future__ import annotations

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import (
    access,
    node_settings,
    paused_trust,
    rollout,
    settings_rollout,
    upgrade,
)
from k3s_deploy.services.k3scluster.state import WAIT_DELAY, ClusterPass

CARRIED = ("Upgrade", "Reconfigure")  # the actions a pause carries to their end


def busy(r: ClusterPass) -> list[str]:
    """Members in the middle of a rollout (a first install holds no node back: it waits unpaused)."""
    return [
        n.name
        for n in r.old.nodes
        if n.operation is not None and n.operation.action in CARRIED and n.state != "Removing"
    ]


async def finish(r: ClusterPass) -> None:
    """Raises NotYet while recorded node work is in flight (or the error that stopped it)."""
    target = r.old.upgrade.to_version if r.old.upgrade is not None else None
    names = busy(r)
    reconfiguring = [n for n in names if (op := r.recorded[n].operation) and op.action == "Reconfigure"]
    if not names or (target is None and not reconfiguring):
        return
    private_key, _tokens = await access.secrets(r)
    await r.hostkeys.load()
    r.views, unverified = await paused_trust.member_views(r)
    r.kept_leaving = [n for n in r.old.nodes if n.state == "Removing"]
    if unverified:
        message = (
            f"paused; the work in flight on {', '.join(names)} waits: {', '.join(unverified)} could not be "
            "verified against the cluster's ProxmoxVMs (address or vmid in status differs), so no node is "
            "contacted; unpause to let a full pass correct the status"
        )
        r.conditions.reconciling(True, "Paused", message)
        raise errors.NotYet(WAIT_DELAY, "Paused", message)
    settings = await node_settings.with_files(r, access.settings(r))
    kubeconfig = await access.kubeconfig(r, private_key)
    try:
        if reconfiguring:
            await settings_rollout.reconfigure_node(
                r, reconfiguring[0], kubeconfig=kubeconfig, private_key=private_key, settings=settings
            )
        elif target is not None:
            states = [upgrade.NodeState(v.name, v.role, v.k3s_version, v.ready) for v in r.views.values()]
            await rollout.advance(
                r, states, target, kubeconfig=kubeconfig, private_key=private_key, settings=settings
            )
    finally:
        r.status.phase = "Paused"
