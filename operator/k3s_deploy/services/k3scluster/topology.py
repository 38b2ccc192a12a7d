"""Which ProxmoxVM children a K3sCluster wants, as full manifests (pure).

Cloned members are named ``<cluster>-server-<i>`` / ``<cluster>-agent-<i>`` (0-based, stable across
restarts, so the same spec always means the same objects and no duplicate VM can appear). Every child
carries the cluster and role labels, a controller ownerReference, and the Proxmox ownership tag
``k3sdeploy-<first 16 hex digits of the cluster uid>`` so VMs stay attributable even without Kubernetes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from k3s_deploy.services.ownership import ownership_tag

Role = Literal["server", "agent"]
ROLES: tuple[Role, ...] = ("server", "agent")

API_VERSION = "k3sdeploy.io/v1alpha1"
LABEL_CLUSTER = "k3sdeploy.io/cluster"
LABEL_ROLE = "k3sdeploy.io/role"
# Informational only (selectors, kubectl -l): ownership is never read from a label, a tenant can
# write any label; the ProxmoxVM controller verifies the controller ownerReference instead.
LABEL_CLUSTER_UID = "k3sdeploy.io/cluster-uid"


@dataclass(frozen=True)
class ClusterRef:
    """Identity of the owning K3sCluster."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "K3sCluster",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Member:
    """One node of the cluster and the ProxmoxVM spec that backs it."""

    name: str
    role: Role
    index: int
    vm_spec: Mapping[str, Any] = field(default_factory=dict)
    adopted: bool = False


def member_name(cluster: str, role: Role, index: int) -> str:
    return f"{cluster}-{role}-{index}"


def cloned_members(
    cluster: ClusterRef,
    *,
    servers: int,
    agents: int,
    server_template: Mapping[str, Any],
    agent_template: Mapping[str, Any],
    common: Mapping[str, Any],
) -> list[Member]:
    """Servers then agents, each with its template merged over ``common`` (credentials, TLS trust)."""
    members: list[Member] = []
    pools: tuple[tuple[Role, int, Mapping[str, Any]], ...] = (
        ("server", servers, server_template),
        ("agent", agents, agent_template),
    )
    for role, count, template in pools:
        for index in range(count):
            spec = _merge(common, template)
            tags = list(spec.get("tags", []))
            tag = ownership_tag(cluster.uid)
            if tag not in tags:
                tags.append(tag)
            spec["tags"] = tags
            members.append(Member(member_name(cluster.name, role, index), role, index, spec))
    return members


def child_manifest(
    cluster: ClusterRef,
    member: Member,
    *,
    ip_config: Mapping[str, Any] | None = None,
    dns: Mapping[str, Any] | None = None,
    interface: int = 0,
) -> dict[str, Any]:
    """The full ProxmoxVM object for ``member``; network settings from the cluster go into cloud-init.

    ``interface`` is the NIC index (netN/ipconfigN) the cluster's ``ip_config`` goes to; it is always
    spelled out, as the apiserver would default it and the child would otherwise look drifted.
    """
    spec = copy.deepcopy(dict(member.vm_spec))
    if ip_config is not None or dns:
        cloud_init = dict(spec.get("cloudInit") or {})
        if ip_config is not None:
            cloud_init["ipConfig"] = dict(ip_config)
            cloud_init["interface"] = interface
        for key, value in (dns or {}).items():
            if value:
                cloud_init[key] = value
        spec["cloudInit"] = cloud_init
    if "cloudInit" in spec:
        spec["cloudInit"] = {"interface": interface, **spec["cloudInit"]}
    return {
        "apiVersion": API_VERSION,
        "kind": "ProxmoxVM",
        "metadata": {
            "name": member.name,
            "namespace": cluster.namespace,
            "labels": {LABEL_CLUSTER: cluster.name, LABEL_ROLE: member.role, LABEL_CLUSTER_UID: cluster.uid},
            "ownerReferences": [cluster.owner_reference()],
        },
        "spec": spec,
    }


def owned_by(child: Mapping[str, Any], cluster: ClusterRef) -> bool:
    """True when ``child`` carries this cluster's controller ownerReference."""
    refs: Sequence[Mapping[str, Any]] = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == cluster.uid for ref in refs)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two JSON objects; ``over`` wins, lists are replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
