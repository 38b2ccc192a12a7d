"""The workload-cluster seam: what the operator asks a K3s cluster's own API through its kubeconfig.

Kept separate from the management-cluster gateway: a different cluster, other credentials (the
admin kubeconfig K3s wrote), and failures that mean "this cluster is not up yet" rather than "the
operator is broken". Day-2 operations (cordon, drain, delete node) extend this Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# The only fields a kubeconfig handed to a TargetCluster may hold (docs/security.md, item 1): inline
# certificate data and an https server. No exec plugin, auth provider, token, file path or proxy, so
# nothing in it can run a program, read a file or send a credential anywhere.
KUBECONFIG_CLUSTER_FIELDS = frozenset({"server", "certificate-authority-data"})
KUBECONFIG_USER_FIELDS = frozenset({"client-certificate-data", "client-key-data"})


@dataclass(frozen=True)
class TargetNode:
    """One Node object of the workload cluster."""

    name: str
    ready: bool
    kubelet_version: str
    roles: frozenset[str] = frozenset()
    internal_ip: str | None = None
    unschedulable: bool = False


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

    Day-2 writes add: reason ``DrainFailed`` (permanent) when a pod may not be evicted under the
    options, ``DrainTimeout`` (transient) when evictions are still refused (a PodDisruptionBudget) or
    pods still terminate after the timeout."""

    async def nodes(self, kubeconfig: str) -> list[TargetNode]:
        """Every Node with its Ready condition and kubelet version."""
        ...

    async def set_unschedulable(self, kubeconfig: str, node: str, unschedulable: bool) -> bool:
        """Cordon (True) or uncordon (False); returns False when the Node does not exist."""
        ...

    async def drain(self, kubeconfig: str, node: str, options: DrainOptions) -> int:
        """Evict the node's pods and wait for them to be gone; returns how many were evicted."""
        ...

    async def delete_node(self, kubeconfig: str, node: str) -> bool:
        """Delete the Node object (on K3s this also removes a server from etcd); False when absent."""
        ...
