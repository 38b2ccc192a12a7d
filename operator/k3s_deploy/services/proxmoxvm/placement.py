"""Where a new clone goes: spread over (or packed onto) Proxmox nodes, counting its siblings.

Siblings are the ProxmoxVMs of the same K3sCluster and role (the ``k3sdeploy.io/cluster`` and
``k3sdeploy.io/role`` labels). Those labels are tenant-writable, which is fine here: spreading is a
placement preference inside the tenant's own namespace, not a security decision. The choice is pure
and deterministic (same inputs, same node), and only new clones are placed: a VM that has a node keeps
it, so a restart never moves anything.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from k3s_deploy.ports.proxmox import NodeSummary, VmSummary

LABEL_CLUSTER = "k3sdeploy.io/cluster"
LABEL_ROLE = "k3sdeploy.io/role"
SPREAD = "Spread"  # the condition type on the ProxmoxVM (and, summed up, on the K3sCluster)
Mode = Literal["Spread", "Pack"]
_DRIVE_KEY = re.compile(r"^(ide|sata|scsi|virtio|efidisk|tpmstate)\d+$")


@dataclass(frozen=True)
class Choice:
    node: str
    # why the VM shares a node with a sibling although Spread was asked: (reason, message), else None
    shortfall: tuple[str, str] | None = None


def sibling_key(namespace: str, labels: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(namespace, cluster, role) of a child of a K3sCluster; None for a stand-alone ProxmoxVM."""
    cluster, role = labels.get(LABEL_CLUSTER), labels.get(LABEL_ROLE)
    return (namespace, cluster, role) if cluster and role else None


def sibling_nodes(
    siblings: Iterable[Mapping[str, Any]], vms: Mapping[int, VmSummary], *, exclude_uid: str
) -> dict[str, str]:
    """uid -> node of every sibling already placed: the node its VM is on, else its status.node."""
    out: dict[str, str] = {}
    for body in siblings:
        uid = str((body.get("metadata") or {}).get("uid", ""))
        if not uid or uid == exclude_uid:
            continue
        status = body.get("status") or {}
        vm = vms.get(status["vmid"]) if isinstance(status.get("vmid"), int) else None
        node = vm.node if vm is not None else status.get("node")
        if node:
            out[uid] = str(node)
    return out


@dataclass
class Reservations:
    """Nodes chosen in this process and not yet visible in the siblings' status (same-moment passes).

    A pass records its choice before its first ``await`` after choosing, so siblings whose passes run
    concurrently through the shared scheduler see each other. Only siblings that still exist count.
    """

    by_group: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)

    def merged(self, key: tuple[str, str, str], placed: Mapping[str, str], alive: set[str]) -> dict[str, str]:
        """The siblings' nodes: the reservations of live siblings, overlaid by what they report.
        Reservations of siblings that are gone (deleted objects) are dropped here."""
        group = self.by_group.setdefault(key, {})
        for uid in [uid for uid in group if uid not in alive]:
            del group[uid]
        return {**group, **placed}

    def reserve(self, key: tuple[str, str, str], uid: str, node: str) -> None:
        self.by_group.setdefault(key, {})[uid] = node


def disk_storages(config: Mapping[str, Any]) -> set[str]:
    """Storages holding the VM's disks and cloud-init drive (a CD-ROM image does not bind the VM)."""
    out = set()
    for key, value in config.items():
        text = str(value)
        volume = text.split(",")[0]
        if not _DRIVE_KEY.match(key) or ":" not in volume:
            continue
        if "media=cdrom" in text and "cloudinit" not in volume:
            continue
        out.add(volume.split(":", 1)[0])
    return out


def reachable(templates: Sequence[VmSummary], shared: Mapping[int, bool], node: str) -> bool:
    """A clone can be made on ``node``: a template copy is there, or a copy is on shared storage
    (Proxmox refuses ``target`` from local storage: "can't clone VM to node ... (VM uses local storage)")."""
    return any(t.node == node or shared.get(t.vmid, True) for t in templates)


def choose_node(
    allowed: Sequence[NodeSummary],
    siblings: Iterable[str],
    *,
    mode: Mode,
    local: Iterable[str] = (),
    unreachable: Sequence[str] = (),
) -> Choice:
    """Spread: the node with the fewest siblings; Pack: the most. Ties: free memory, a template copy on
    the node, then the name (so the result never depends on list order)."""
    counts = Counter(siblings)
    local = set(local)
    sign = 1 if mode == SPREAD else -1

    def rank(n: NodeSummary) -> tuple[int, int, bool, str]:
        return (sign * counts[n.node], -n.free_memory, n.node not in local, n.node)

    best = min(allowed, key=rank)
    if mode != SPREAD or counts[best.node] == 0:
        return Choice(best.node)
    if unreachable:
        return Choice(
            best.node,
            (
                "TemplateOnLocalStorage",
                f"the template is on local storage and has no copy on {', '.join(sorted(unreachable))}: "
                "put it on shared storage or make a copy on every node, so the VMs can spread",
            ),
        )
    return Choice(
        best.node,
        (
            "NotEnoughNodes",
            f"{sum(counts.values()) + 1} VMs of this role share {len(allowed)} node(s) "
            f"({', '.join(sorted(n.node for n in allowed))}): add nodes to allowedNodes (or bring them "
            "online), or lower the replicas, to give each VM its own node",
        ),
    )
