"""Discovery: adopt VMs that already exist, by Proxmox tags per role or by ``node/vmid`` lists (pure).

These are the old CLI's two modes. Adopted members are named ``<cluster>-<role>-<vmid>`` (stable
whatever else appears or disappears) and their ProxmoxVM specs default to ``deletionPolicy: Retain``
so deleting the cluster never destroys a VM it did not create, unless the user says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from k3s_deploy import errors
from k3s_deploy.api.discovery import Discovery
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.k3scluster.topology import ROLES, Member, Role


def parse_location(text: str) -> tuple[str, int]:
    """``pve1/101`` -> (``pve1``, 101)."""
    node, sep, vmid = text.strip().partition("/")
    if not sep or not node or not vmid.isdigit():
        raise errors.InvalidSpec(
            f"discovery entry {text!r} is not node/vmid (like pve1/101)", reason="InvalidDiscovery"
        )
    return node, int(vmid)


def adopted_spec(
    common: Mapping[str, Any], node: str, vmid: int, deletion_policy: str | None
) -> dict[str, Any]:
    spec = dict(common)
    spec["node"] = node
    spec["source"] = {"existing": {"vmid": vmid}}
    spec["deletionPolicy"] = deletion_policy or "Retain"
    return spec


def by_locations(
    cluster: str,
    locations: Mapping[Role, Sequence[str]],
    *,
    common: Mapping[str, Any],
    deletion_policy: str | None = None,
) -> list[Member]:
    """Members from explicit ``node/vmid`` lists; a VM listed twice is an error."""
    seen: dict[int, Role] = {}
    members: list[Member] = []
    for role in ROLES:
        for index, text in enumerate(locations.get(role, ())):
            node, vmid = parse_location(text)
            if vmid in seen:
                raise errors.InvalidSpec(
                    f"VM {vmid} is listed twice in spec.discovery (as {seen[vmid]} and {role})",
                    reason="InvalidDiscovery",
                )
            seen[vmid] = role
            spec = adopted_spec(common, node, vmid, deletion_policy)
            members.append(Member(f"{cluster}-{role}-{vmid}", role, index, spec, adopted=True))
    return members


def by_tags(
    cluster: str,
    vms: Iterable[VmSummary],
    tags: Mapping[Role, Sequence[str]],
    *,
    common: Mapping[str, Any],
    deletion_policy: str | None = None,
) -> list[Member]:
    """Members from every non-template VM carrying all tags of a role, ordered by vmid.

    A VM matching both roles is an error (the user must make the tags disjoint).
    """
    matched: dict[int, tuple[Role, VmSummary]] = {}
    for vm in sorted(vms, key=lambda v: v.vmid):
        if vm.template:
            continue
        for role in ROLES:
            wanted = {t.lower() for t in tags.get(role, ())}
            if not wanted or not wanted <= {t.lower() for t in vm.tags}:
                continue
            if vm.vmid in matched:
                raise errors.InvalidSpec(
                    f"VM {vm.vmid} ({vm.name}) carries the tags of both servers and agents",
                    reason="InvalidDiscovery",
                )
            matched[vm.vmid] = (role, vm)
    members: list[Member] = []
    counters: dict[Role, int] = {"server": 0, "agent": 0}
    for role in ROLES:
        for vmid, (vm_role, vm) in matched.items():
            if vm_role != role:
                continue
            spec = adopted_spec(common, vm.node, vmid, deletion_policy)
            members.append(Member(f"{cluster}-{role}-{vmid}", role, counters[role], spec, adopted=True))
            counters[role] += 1
    return members


def members(
    cluster: str, spec: Discovery, vms: Sequence[VmSummary] | None, *, common: Mapping[str, Any]
) -> list[Member]:
    """The adopted members ``spec.discovery`` selects: the one selection the operator and
    ``k3s-deploy discover`` share. ``vms`` (the VMs the credential sees) is needed for tags only."""
    if spec.locations is not None:
        return by_locations(
            cluster,
            {"server": spec.locations.servers, "agent": spec.locations.agents},
            common=common,
            deletion_policy=spec.deletion_policy,
        )
    assert spec.tags is not None
    return by_tags(
        cluster,
        vms or [],
        {"server": spec.tags.servers, "agent": spec.tags.agents},
        common=common,
        deletion_policy=spec.deletion_policy,
    )
