"""Which ProxmoxVM children a K3sCluster wants, as full manifests (pure).

Cloned members are named ``<cluster>-server-<i>`` / ``<cluster>-agent-<i>``, and agents of a named
pool ``<cluster>-<pool>-<i>`` (0-based, stable across restarts, so the same spec always means the same
objects and no duplicate VM can appear; pool names are unique and never ``server``/``agent``). Every child
carries the cluster and role labels, a controller ownerReference, and the Proxmox ownership tag
``k3sdeploy-<first 16 hex digits of the cluster uid>`` so VMs stay attributable even without Kubernetes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from k3s_deploy.services.cluster_identity import identity_tag
from k3s_deploy.services.ownership import ownership_tag

Role = Literal["server", "agent"]
ROLES: tuple[Role, ...] = ("server", "agent")

API_VERSION = "k3sdeploy.io/v1alpha1"
LABEL_CLUSTER = "k3sdeploy.io/cluster"
LABEL_ROLE = "k3sdeploy.io/role"
# Informational only (selectors, kubectl -l): ownership is never read from a label, a tenant can
# write any label; the ProxmoxVM controller verifies the controller ownerReference instead.
LABEL_CLUSTER_UID = "k3sdeploy.io/cluster-uid"
LABEL_POOL = "k3sdeploy.io/pool"


@dataclass(frozen=True)
class ClusterRef:
    """Identity of the owning K3sCluster."""

    name: str
    namespace: str
    uid: str
    identity: str = ""  # the stable cluster id from <cluster>-token (services.cluster_identity)

    @property
    def tag(self) -> str:
        """The Proxmox tag of this cluster's VMs: from the stable id once there is one, else the uid."""
        return identity_tag(self.identity) if self.identity else ownership_tag(self.uid)

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
    pool: str | None = None  # a named agent pool; None for servers and the default agents
    node_labels: Mapping[str, str] = field(default_factory=dict)
    node_taints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """One group of cloned members: the servers, the default agents, or a named agent pool."""

    role: Role
    replicas: int
    template: Mapping[str, Any]
    pool: str | None = None
    node_labels: Mapping[str, str] = field(default_factory=dict)
    node_taints: tuple[str, ...] = ()

    def member_name(self, cluster: str, index: int) -> str:
        return f"{cluster}-{self.pool}-{index}" if self.pool else member_name(cluster, self.role, index)


def member_name(cluster: str, role: Role, index: int) -> str:
    return f"{cluster}-{role}-{index}"


def cloned_members(
    cluster: ClusterRef,
    *,
    servers: int = 0,
    agents: int = 0,
    server_template: Mapping[str, Any] | None = None,
    agent_template: Mapping[str, Any] | None = None,
    common: Mapping[str, Any],
    groups: Sequence[Group] | None = None,
) -> list[Member]:
    """Servers, then agents, then each pool's agents, each with its template merged over ``common``
    (credentials, TLS trust). ``groups`` replaces the servers/agents shorthand when given."""
    if groups is None:
        groups = (
            Group("server", servers, server_template or {}),
            Group("agent", agents, agent_template or {}),
        )
    members: list[Member] = []
    for group in groups:
        for index in range(group.replicas):
            spec = _merge(common, group.template)
            tags = list(spec.get("tags", []))
            tag = cluster.tag
            if tag not in tags:
                tags.append(tag)
            spec["tags"] = tags
            members.append(
                Member(
                    group.member_name(cluster.name, index),
                    group.role,
                    index,
                    spec,
                    pool=group.pool,
                    node_labels=dict(group.node_labels),
                    node_taints=tuple(group.node_taints),
                )
            )
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
    labels = {LABEL_CLUSTER: cluster.name, LABEL_ROLE: member.role, LABEL_CLUSTER_UID: cluster.uid}
    if member.pool:
        labels[LABEL_POOL] = member.pool
    return {
        "apiVersion": API_VERSION,
        "kind": "ProxmoxVM",
        "metadata": {
            "name": member.name,
            "namespace": cluster.namespace,
            "labels": labels,
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
