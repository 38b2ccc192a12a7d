"""The members a paused pass may dial: each one checked against the cluster's own children, as a whole
pass checks it, never taken from status alone.

``status.nodes[]`` is writable by the cluster's author (threat T2 in the security model), so an
address or vmid read from it could point the operator's SSH and API calls anywhere, a metadata
address or another tenant's VM included. A paused pass creates, changes and deletes nothing, so it
cannot run :func:`children.ensure_children`; it reads what that function reads (the children, and the
VM list when members are discovered by tags), plans without claiming an address, and works each
member's address out the same way: the child must carry this cluster's ownerReference, the address
is the pool address the plan gives it or else the first one the child reports, the vmid is the
child's, and the role, pool, labels and taints are the spec's. A member whose status entry disagrees
with that is reported, and nothing of the pass is dialled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k3s_deploy import netpolicy
from k3s_deploy.api.k3scluster_status import ClusterNode
from k3s_deploy.services.k3scluster.children import discovered_vms
from k3s_deploy.services.k3scluster.desired import Desired, plan
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView, as_vm
from k3s_deploy.services.k3scluster.topology import owned_by


async def member_views(r: ClusterPass) -> tuple[dict[str, NodeView], list[str]]:
    """A view of every member in status (but those leaving), and the names of those that could not be
    verified; the views are what status recorded, with the verified address, vmid and the spec's
    role, pool, labels and taints."""
    listed = await r.deps.objects.list_children(r.ref.namespace, r.ref.name)
    want = await plan(
        r.ref,
        r.spec,
        objects=r.deps.objects,
        claims=r.deps.addresses,
        children=listed,
        discovered_vms=await discovered_vms(r),
        read_only=True,
    )
    mine = {c["metadata"]["name"]: c for c in listed if owned_by(c, r.ref)}
    views: dict[str, NodeView] = {}
    unverified: list[str] = []
    for node in r.old.nodes:
        if node.state == "Removing":
            continue
        view = views[node.name] = _view(node)
        if not _verify(view, node, mine.get(node.name), want):
            unverified.append(node.name)
    return views, unverified


def _verify(view: NodeView, node: ClusterNode, child: Mapping[str, Any] | None, want: Desired) -> bool:
    member = next((m for m in want.members if m.name == node.name), None)
    if child is None or member is None:
        return False
    st = as_vm(child).status
    ip = want.static_ips.get(node.name) or (st.addresses[0] if st.addresses else None)
    if not ip or ip != node.ip or st.vmid is None or st.vmid != node.vmid:
        return False
    if netpolicy.node_address_problem(ip):
        return False
    view.ip, view.vmid, view.pve_node = ip, st.vmid, st.node
    view.role, view.adopted, view.pool = member.role, member.adopted, member.pool
    view.node_labels, view.node_taints = member.node_labels, member.node_taints
    return True


def _view(node: ClusterNode) -> NodeView:
    """The member as status recorded it (kept as it is when it cannot be verified: status is written
    back unchanged, and nothing of it is dialled)."""
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
        config_digest=node.config_digest,
    )
