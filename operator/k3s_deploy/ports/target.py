"""The workload-cluster seam: what the operator asks a K3s cluster's own API through its kubeconfig.

Kept separate from the management-cluster gateway: a different cluster, other credentials (the
admin kubeconfig K3s wrote), and failures that mean "this cluster is not up yet" rather than "the
operator is broken". Day-2 operations (cordon, drain, delete node) extend this Protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# The only fields a kubeconfig handed to a TargetCluster may hold (docs/security.md, item 1): inline
# certificate data and an https server. No exec plugin, auth provider, token, file path or proxy, so
# nothing in it can run a program, read a file or send a credential anywhere.
KUBECONFIG_CLUSTER_FIELDS = frozenset({"server", "certificate-authority-data"})
KUBECONFIG_USER_FIELDS = frozenset({"client-certificate-data", "client-key-data"})


@dataclass(frozen=True)
class Taint:
    """One taint of a Node (``time_added`` is kept as read, for NoExecute taints others set)."""

    key: str
    effect: str
    value: str | None = None
    time_added: str | None = None

    @property
    def ident(self) -> str:
        """What makes a taint unique on a Node: key and effect."""
        return f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class TargetNode:
    """One Node object of the workload cluster."""

    name: str
    ready: bool
    kubelet_version: str
    roles: frozenset[str] = frozenset()
    internal_ip: str | None = None
    unschedulable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    resource_version: str | None = None
    # When the Ready condition last changed (so how long a NotReady node has been so); None: unknown.
    ready_changed_at: datetime | None = None


@dataclass(frozen=True)
class NodeMetadataPatch:
    """A change of a Node's labels, annotations (None removes a key) and taints (None: unchanged,
    else the whole new list), made only if the Node is still at ``resource_version``."""

    labels: Mapping[str, str | None] = field(default_factory=dict)
    annotations: Mapping[str, str | None] = field(default_factory=dict)
    taints: Sequence[Taint] | None = None
    resource_version: str | None = None


@dataclass(frozen=True)
class TargetPod:
    """One Pod of the workload cluster, with what the drain rules look at."""

    namespace: str
    name: str
    node: str | None = None
    controller_kind: str | None = None  # the kind of its controlling owner; None: unmanaged
    mirror: bool = False  # a static pod's mirror (the kubelet owns it)
    empty_dir: bool = False  # has an emptyDir volume
    terminating: bool = False


@dataclass(frozen=True)
class DrainOptions:
    """As ``kubectl drain``: evict through the Eviction API (PodDisruptionBudgets are honoured)."""

    timeout_s: float = 300.0
    ignore_daemon_sets: bool = True
    delete_empty_dir_data: bool = True
    force: bool = False


class TargetCluster(Protocol):
    """Reads the workload cluster. Errors: ``KubeUnavailable`` (transient) when the API does not answer
    or TLS fails while it starts; ``CredentialsError`` when the kubeconfig is refused (401/403), or
    holds anything beyond ``KUBECONFIG_*_FIELDS`` (reason ``KubeconfigRejected``; it is not loaded).

    The drain itself (kubectl drain's rules, the timeout) is :mod:`k3s_deploy.services.k3scluster.drain`;
    the port lists and evicts pods."""

    async def nodes(self, kubeconfig: str) -> list[TargetNode]:
        """Every Node with its Ready condition and kubelet version."""
        ...

    async def set_unschedulable(self, kubeconfig: str, node: str, unschedulable: bool) -> bool:
        """Cordon (True) or uncordon (False); returns False when the Node does not exist."""
        ...

    async def pods_on(self, kubeconfig: str, node: str) -> list[TargetPod]:
        """Every Pod bound to ``node``, terminating ones included."""
        ...

    async def evict(self, kubeconfig: str, namespace: str, name: str) -> bool:
        """Ask the Eviction API to evict a pod; False when it refuses for now (HTTP 429: a
        PodDisruptionBudget does not allow it yet). A pod already gone counts as evicted."""
        ...

    async def delete_node(self, kubeconfig: str, node: str) -> bool:
        """Delete the Node object (on K3s this also removes a server from etcd); False when absent."""
        ...

    async def patch_node_metadata(self, kubeconfig: str, node: str, patch: NodeMetadataPatch) -> bool:
        """Apply ``patch`` to the Node; False when it does not exist. A Node changed since it was read
        (another resourceVersion) is ``KubeUnavailable``: read again and retry."""
        ...
