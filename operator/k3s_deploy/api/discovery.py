"""Discovery: a K3sCluster built on VMs that already exist, found by Proxmox tags or node/vmid lists."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from k3s_deploy.api.common import ApiModel, DeletionPolicy, PveTag, Rule, VmLocation
from k3s_deploy.api.proxmoxvm import CloudInitUser

__all__ = ["Discovery", "RoleLocations", "RoleTags"]


class RoleTags(ApiModel):
    """Discovery by Proxmox tags: a VM belongs to a role when it carries every tag listed for it."""

    servers: list[PveTag] = Field(
        min_length=1, max_length=16, description="Tags marking servers, e.g. [k3s-server, prod]."
    )
    agents: list[PveTag] = Field(default_factory=list, max_length=16, description="Tags marking agents.")


class RoleLocations(ApiModel):
    """Discovery by explicit lists of node/vmid locations."""

    servers: list[VmLocation] = Field(
        min_length=1, max_length=9, description="Server VMs as <proxmox-node>/<vmid>, e.g. [pve1/101]."
    )
    agents: list[VmLocation] = Field(default_factory=list, max_length=500, description="Agent VMs.")


class Discovery(ApiModel):
    """Use VMs that already exist instead of cloning. Discovered VMs are adopted and by default retained."""

    tags: RoleTags | None = Field(default=None, description="Find the VMs by Proxmox tags per role.")
    locations: RoleLocations | None = Field(
        default=None, description="List the VMs per role as <proxmox-node>/<vmid>."
    )
    deletion_policy: DeletionPolicy = Field(
        default="Retain",
        description="What happens to adopted VMs when the cluster or a node goes: Retain, Stop or Delete.",
    )
    cloud_init: CloudInitUser | None = Field(
        default=None, description="Cloud-init user and SSH keys to set on adopted VMs (unset: left alone)."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.tags) != has(self.locations)",
            "discovery needs exactly one of tags (find VMs by Proxmox tags) or locations (node/vmid lists)",
            lambda m: (m.tags is None) != (m.locations is None),
        ),
    )
