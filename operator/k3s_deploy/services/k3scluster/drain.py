"""Draining a node as ``kubectl drain`` does: which pods go (the rules), evictions through the
Eviction API (a PodDisruptionBudget may refuse for a while), then the pods must be gone.

The rules are policy, so they live here; the TargetCluster port only lists and evicts pods.
"""

from __future__ import annotations

import asyncio

from k3s_deploy import errors
from k3s_deploy.ports.target import DrainOptions, TargetCluster, TargetPod

EVICT_RETRY_S = 5.0  # between rounds of evictions a PodDisruptionBudget refused
GONE_POLL_S = 2.0  # between looks at pods that still terminate


def evictable(node: str, pods: list[TargetPod], options: DrainOptions) -> list[tuple[str, str]]:
    """(namespace, name) of the pods to evict. Mirror pods and terminating pods are left alone,
    DaemonSet pods stay (or refuse the drain); unmanaged pods and emptyDir data go only with
    ``force`` / ``delete_empty_dir_data``. Raises ``DrainFailed`` (permanent) naming what blocks."""
    out: list[tuple[str, str]] = []
    problems: list[str] = []
    for pod in pods:
        if pod.terminating or pod.mirror:
            continue
        where = f"{pod.namespace}/{pod.name}"
        if pod.controller_kind == "DaemonSet":
            if options.ignore_daemon_sets:
                continue
            problems.append(f"{where} is managed by a DaemonSet (set drain.ignoreDaemonSets)")
            continue
        if pod.controller_kind is None and not options.force:
            problems.append(f"{where} is not managed by a controller (set drain.force to delete it)")
            continue
        if pod.empty_dir and not options.delete_empty_dir_data:
            problems.append(f"{where} has emptyDir data (set drain.deleteEmptyDirData)")
            continue
        out.append((pod.namespace, pod.name))
    if problems:
        raise errors.PermanentError(
            f"cannot drain node {node}: " + "; ".join(problems[:5]), reason="DrainFailed"
        )
    return out


async def drain(target: TargetCluster, kubeconfig: str, node: str, options: DrainOptions) -> int:
    """Evict the node's pods and wait for them to be gone; returns how many were evicted. Raises
    ``DrainTimeout`` (transient) when evictions are still refused or pods still terminate after
    ``options.timeout_s``."""
    victims = evictable(node, await target.pods_on(kubeconfig, node), options)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.timeout_s
    waiting = list(victims)
    while waiting:
        waiting = [(ns, name) for ns, name in waiting if not await target.evict(kubeconfig, ns, name)]
        if waiting and loop.time() >= deadline:
            raise errors.TransientError(
                f"draining node {node}: eviction of {', '.join(f'{s}/{n}' for s, n in waiting[:5])} still "
                f"refused after {options.timeout_s:.0f}s (a PodDisruptionBudget?)",
                reason="DrainTimeout",
            )
        if waiting:
            await asyncio.sleep(min(EVICT_RETRY_S, max(0.0, deadline - loop.time())))
    if not victims:
        return 0
    wanted = set(victims)
    while True:
        left = [
            f"{p.namespace}/{p.name}"
            for p in await target.pods_on(kubeconfig, node)
            if (p.namespace, p.name) in wanted
        ]
        if not left:
            return len(victims)
        if loop.time() >= deadline:
            raise errors.TransientError(
                f"draining node {node}: pods {', '.join(left[:5])} still terminating after "
                f"{options.timeout_s:.0f}s",
                reason="DrainTimeout",
            )
        await asyncio.sleep(min(GONE_POLL_S, max(0.0, deadline - loop.time())))
