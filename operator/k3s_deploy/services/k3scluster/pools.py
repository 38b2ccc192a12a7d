"""Per-pool status of a K3sCluster: each named agent pool with its wanted and Ready agents (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from k3s_deploy.api.k3scluster import K3sClusterSpec
from k3s_deploy.api.k3scluster_status import K3sClusterStatus, PoolStatus


class _Node(Protocol):
    @property
    def pool(self) -> str | None: ...

    @property
    def ready(self) -> bool: ...


def pool_status(spec: K3sClusterSpec, nodes: Iterable[_Node]) -> list[PoolStatus]:
    """One entry per spec.agentPools[], in spec order; ``ready`` counts the pool's Ready members."""
    ready: dict[str, int] = {}
    for node in nodes:
        if node.pool is not None and node.ready:
            ready[node.pool] = ready.get(node.pool, 0) + 1
    return [
        PoolStatus(name=p.name, replicas=p.replicas, ready=ready.get(p.name, 0)) for p in spec.agent_pools
    ]


def summary(pools: Iterable[PoolStatus]) -> str | None:
    """``gpu 1/2, edge 3/3`` for the printer column; None without pools."""
    text = ", ".join(f"{p.name} {p.ready}/{p.replicas}" for p in pools)
    return text[:1024] or None


def store(status: K3sClusterStatus, spec: K3sClusterSpec, nodes: Iterable[_Node]) -> None:
    """Write status.pools and status.poolSummary (left unset for a cluster that never had pools)."""
    found = pool_status(spec, nodes)
    if found or status.pools:
        status.pools = found
        status.pool_summary = summary(found)
