"""The K3sCluster handlers as kopf sees them: thin forwarders, so the controller loads at its first event.

kopf needs every handler registered at start-up, but the K3sCluster controller's modules (its pass,
install, day-2 and the K3sCluster model: about 4 MiB of the process) are of no use to an operator that
only handles ProxmoxVMs. Each forwarder imports :mod:`k3s_deploy.handlers.k3scluster` on its first
call and hands kopf's keyword arguments on unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from k3s_deploy.api.common import GROUP, VERSION

# api.k3scluster.PLURAL and topology.LABEL_CLUSTER (a test checks), without importing their modules.
PLURAL = "k3sclusters"
LABEL_CLUSTER = "k3sdeploy.io/cluster"


def _forward(name: str) -> Callable[..., Awaitable[Any]]:
    async def handler(**kwargs: Any) -> Any:
        from k3s_deploy.handlers import k3scluster

        return await getattr(k3scluster, name)(**kwargs)

    handler.__name__ = handler.__qualname__ = name
    return handler


def register(registry: kopf.OperatorRegistry) -> None:
    """Put the K3sCluster handlers into ``registry`` (called by the runner, not on import)."""
    kopf.on.event(GROUP, VERSION, PLURAL, id="k3scluster-wake", registry=registry)(_forward("wake"))
    kopf.on.event(
        GROUP,
        VERSION,
        "proxmoxvms",
        labels={LABEL_CLUSTER: kopf.PRESENT},
        id="k3scluster-child-wake",
        registry=registry,
    )(_forward("child_changed"))
    kopf.daemon(
        GROUP, VERSION, PLURAL, cancellation_timeout=10.0, id="k3scluster-reconcile", registry=registry
    )(_forward("reconcile_loop"))
    kopf.on.delete(GROUP, VERSION, PLURAL, id="k3scluster-finalize", registry=registry)(_forward("delete"))
