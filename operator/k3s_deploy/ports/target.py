"""The workload-cluster seam: what the operator asks a K3s cluster's own API through its kubeconfig.

Kept separate from the management-cluster gateway: a different cluster, other credentials (the
admin kubeconfig K3s wrote), and failures that mean "this cluster is not up yet" rather than "the
operator is broken". Day-2 operations (cordon, drain, delete node) extend this Protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TargetNode:
    """One Node object of the workload cluster."""

    name: str
    ready: bool
    kubelet_version: str
    roles: frozenset[str] = frozenset()
    internal_ip: str | None = None
    unschedulable: bool = False


class TargetCluster(Protocol):
    """Reads the workload cluster. Errors: ``KubeUnavailable`` (transient) when the API does not answer
    or TLS fails while it starts; ``CredentialsError`` when the kubeconfig is refused (401/403)."""

    async def nodes(self, kubeconfig: str) -> list[TargetNode]:
        """Every Node with its Ready condition and kubelet version."""
        ...
