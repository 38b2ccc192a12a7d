"""What a discovery would adopt, checked before applying (``k3s-deploy discover``; pure).

It runs the operator's own steps on one VM list: the selection of :func:`discovery.members`, then per
member the ProxmoxVM adoption checks (:func:`plan.select_existing`, :func:`check_adoptable`), so the
preview cannot disagree with what the operator will do with the same inventory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from k3s_deploy import errors
from k3s_deploy.api.discovery import Discovery
from k3s_deploy.api.proxmoxvm import VMSelector
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.k3scluster import discovery
from k3s_deploy.services.ownership import AdoptionPolicy, check_adoptable, ownership_tag
from k3s_deploy.services.proxmoxvm.plan import select_existing


@dataclass(frozen=True)
class Candidate:
    """One VM a discovery selects for a role, and whether the operator may adopt it."""

    role: str
    member: str
    node: str
    vmid: int
    name: str
    status: str
    tags: list[str]
    pool: str | None
    adoptable: bool
    reason: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def preview(
    cluster: str,
    uid: str | None,
    spec: Discovery,
    vms: Sequence[VmSummary],
    policy: AdoptionPolicy,
) -> list[Candidate]:
    """Every member ``spec`` selects (servers first), with the adoption verdict of each.

    ``uid`` is the K3sCluster's uid when it exists already: its own ownership tag then does not count
    as another owner's. A selection error (a VM in both roles, a malformed location) is raised as is.
    """
    own_tag = ownership_tag(uid) if uid else ""
    out: list[Candidate] = []
    for member in discovery.members(cluster, spec, vms, common={}):
        node = str(member.vm_spec["node"])
        vmid = int(member.vm_spec["source"]["existing"]["vmid"])
        found = next((vm for vm in vms if vm.vmid == vmid and vm.node == node), None)
        reason = message = None
        try:
            vm = select_existing(vms, VMSelector(vmid=vmid), node)
            check_adoptable(policy, vm, own_tag)
        except errors.K3sDeployError as exc:
            reason, message = exc.reason, exc.message
        out.append(
            Candidate(
                role=member.role,
                member=member.name,
                node=node,
                vmid=vmid,
                name=found.name if found else "",
                status=found.status if found else "missing",
                tags=sorted(found.tags) if found else [],
                pool=found.pool if found else None,
                adoptable=reason is None,
                reason=reason,
                message=message,
            )
        )
    return out
