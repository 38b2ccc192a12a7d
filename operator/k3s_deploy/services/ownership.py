"""Who owns a VM, decided only from what a tenant cannot forge (docs/security.md, item 4).

The Proxmox ownership tag is derived from one uid, chosen by :func:`owner_uid`: the K3sCluster's uid
when the ProxmoxVM's controller ownerReference names a K3sCluster that really exists in the same
namespace with that uid (ownerReferences cannot point across namespaces, and uids are assigned by the
apiserver), else the ProxmoxVM's own uid. Labels are never read for it: any tenant can write them.
Once the verified cluster has a stable id in its ``<cluster>-token`` Secret, its children tag with
the hash of that id instead (:func:`cluster_tag`), and accept VMs carrying either tag, so the same
manifest and Secrets re-applied on another management cluster find the VMs again.
Adopting a VM the operator did not create needs an admin's mark in Proxmox (:class:`AdoptionPolicy`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from k3s_deploy.api.common import GROUP, VERSION
from k3s_deploy.errors import InvalidSpec
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.cluster_identity import identity_tag, read_cluster_id, token_secret_name
from k3s_deploy.settings import DEFAULT_ADOPTABLE_TAG

TAG_PREFIX = "k3sdeploy-"
# 16 hex digits = 64 random bits of a v4 uid: guessing or grinding object uids until one collides
# with a tag seen in Proxmox is out of reach (8 digits, 32 bits, was within a patient tenant's reach).
UID_PREFIX_LEN = 16
_OWNERSHIP_TAG = re.compile(rf"^{TAG_PREFIX}[0-9a-f]{{8,32}}$")
CLUSTER_KIND = "K3sCluster"
CLUSTER_API_VERSION = f"{GROUP}/{VERSION}"


def ownership_tag(uid: str) -> str:
    """The Proxmox tag marking the VMs created for the owner with this uid (lower-case hex)."""
    return TAG_PREFIX + uid.replace("-", "").lower()[:UID_PREFIX_LEN]


def is_ownership_tag(tag: str) -> bool:
    """True for any owner's tag (this version's or an older, shorter one); not for other k3sdeploy- tags."""
    return bool(_OWNERSHIP_TAG.match(tag.lower()))


def foreign_ownership_tags(tags: Iterable[str], own: str) -> list[str]:
    """The ownership tags of other owners among ``tags``."""
    return sorted(t for t in tags if is_ownership_tag(t) and t.lower() != own)


def claimed_cluster(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the K3sCluster the controller ownerReference names; None when there is none."""
    for ref in metadata.get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == CLUSTER_KIND
            and ref.get("apiVersion") == CLUSTER_API_VERSION
        ):
            return str(ref.get("name", "")), str(ref.get("uid", ""))
    return None


class ClusterReader(Protocol):
    async def read_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...


async def owner_uid(kube: ClusterReader, metadata: Mapping[str, Any], verified: set[str]) -> str:
    """The uid the ownership tag derives from; the one place it is decided (:func:`cluster_tag`
    adds the cluster's stable id for verified children).

    ``verified`` remembers cluster uids already checked for this object: a uid never changes owner or
    namespace, so one read per object and process is enough. A controller ownerReference that names
    no K3sCluster of that uid in this namespace is refused (``OwnerNotVerified``), not ignored: the
    object then claims a cluster it does not belong to.
    """
    claim = claimed_cluster(metadata)
    if claim is None:
        return str(metadata.get("uid", ""))
    name, uid = claim
    if uid in verified:
        return uid
    namespace = str(metadata.get("namespace", ""))
    cluster = await kube.read_object(GROUP, VERSION, "k3sclusters", namespace, name)
    actual = str(((cluster or {}).get("metadata") or {}).get("uid", ""))
    if not uid or actual != uid:
        found = f"has uid {actual}" if cluster else "does not exist"
        raise InvalidSpec(
            f"the controller ownerReference names K3sCluster {name} (uid {uid}), but K3sCluster "
            f"{namespace}/{name} {found}; only a K3sCluster creates its children: remove the "
            "ownerReference to make this a standalone ProxmoxVM",
            reason="OwnerNotVerified",
        )
    verified.add(uid)
    return uid


class SecretReader(Protocol):
    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...


async def cluster_tag(kube: SecretReader, metadata: Mapping[str, Any], owner: str) -> str:
    """The tag of the verified owning cluster's stable id (issue 17), or "" when it has none yet.

    Call with the uid :func:`owner_uid` returned: only a child whose cluster was verified in its own
    namespace gets here, and the id is read from that cluster's ``<cluster>-token`` Secret in the
    same namespace. A tenant can write any id into a Secret of its own, but it only derives the tag of
    VMs whose id it already holds: the tag is a hash of the id (services.cluster_identity).
    """
    claim = claimed_cluster(metadata)
    if claim is None or not owner or claim[1] != owner:
        return ""
    secret = token_secret_name(claim[0])
    found = read_cluster_id(await kube.read_secret(str(metadata.get("namespace", "")), secret), secret=secret)
    return identity_tag(found) if found else ""


@dataclass(frozen=True)
class AdoptionPolicy:
    """The admin's mark that lets the operator adopt a VM (and destroy an adopted one): a tag or a pool."""

    tag: str | None = DEFAULT_ADOPTABLE_TAG
    pool: str | None = None

    @classmethod
    def from_settings(cls, tag: str | None, pool: str | None) -> AdoptionPolicy:
        return cls(tag=tag or None, pool=pool or None)

    def allows(self, vm: VmSummary) -> bool:
        tagged = self.tag is not None and self.tag.lower() in {t.lower() for t in vm.tags}
        return tagged or (self.pool is not None and vm.pool == self.pool)

    def how(self) -> str:
        """What an admin must do in Proxmox, for messages."""
        ways = [f"add the Proxmox tag {self.tag}"] if self.tag else []
        ways += [f"move it into the Proxmox pool {self.pool}"] if self.pool else []
        return " or ".join(ways) or "no marker is configured (adoption is disabled)"


def check_adoptable(policy: AdoptionPolicy, vm: VmSummary, own_tag: str) -> None:
    """Refuse a VM the admin did not mark, or one another owner created (its tag names that owner)."""
    where = f"VM {vm.node}/{vm.vmid} ({vm.name or 'unnamed'})"
    if not policy.allows(vm):
        raise InvalidSpec(
            f"{where} is not marked as adoptable; an admin must {policy.how()} before k3s-deploy may "
            "adopt it",
            reason="AdoptionNotAllowed",
        )
    foreign = foreign_ownership_tags(vm.tags, own_tag)
    if foreign:
        raise InvalidSpec(
            f"{where} carries {', '.join(foreign)}, the ownership tag of another k3s-deploy object, so it "
            "is not adopted; if that owner is gone, an admin may remove the tag",
            reason="AdoptionNotAllowed",
        )
