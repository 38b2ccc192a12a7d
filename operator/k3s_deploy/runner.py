"""Start kopf with the project's settings and the handlers of both kinds.

kopf's own knobs are set in a startup handler from :class:`OperatorSettings`: scope, peering, watch
timeouts (watch streams can stall silently without them), where progress is kept (annotations under
``k3sdeploy.io/``, so ``status`` stays ours), which log records become Events, and error backoffs.
Shared runtime state (the Kubernetes gateway, Proxmox sessions, per-object memory) travels in kopf's
``memo`` as the :class:`~k3s_deploy.wiring.Runtime` that :mod:`k3s_deploy.wiring` builds.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import gc
import getpass
import logging
import os
import random
import socket
from typing import Any

from k3s_deploy.settings import OperatorSettings
from k3s_deploy.wiring import build_runtime

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "k3sdeploy.io"
FINALIZER = "k3sdeploy.io/finalizer"


def peering_priority(settings: OperatorSettings) -> int:
    """Ours, or a random one: equal priorities make kopf pause every replica; random ones elect one."""
    if settings.peering_priority is not None:
        return settings.peering_priority
    return random.SystemRandom().randint(1, 2**30)


def peering_identity() -> str:
    """This replica's name among its peers (the pod name when POD_ID is set), as kopf makes it."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"{getpass.getuser()}@{socket.gethostname()}/{stamp}/{random.SystemRandom().randrange(36**3):03x}"


def apply_kopf_settings(
    kopf_settings: Any, settings: OperatorSettings, *, priority: int | None = None
) -> None:
    """Map our settings onto ``kopf.OperatorSettings``."""
    import kopf

    kopf_settings.peering.standalone = settings.standalone
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.clusterwide = not settings.namespaces
    kopf_settings.peering.mandatory = not settings.standalone
    kopf_settings.peering.priority = priority if priority is not None else peering_priority(settings)
    kopf_settings.peering.lifetime = settings.peering_lifetime_seconds
    kopf_settings.watching.server_timeout = settings.watch_server_timeout
    kopf_settings.watching.client_timeout = settings.watch_client_timeout
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.networking.request_timeout = max(60, settings.watch_client_timeout + 30)
    kopf_settings.networking.connect_timeout = 30
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Our handlers post their own Events per real action; kopf adds only warnings and errors.
    kopf_settings.posting.enabled = True
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.posting.reporting_component = "k3s-deploy"
    # Handler errors without an explicit delay: retry after 30 s, not kopf's 60 s forever-loop default
    # (permanent errors never reach kopf: they become Stalled conditions).
    kopf_settings.execution.default_backoff = 30
    kopf_settings.queueing.error_delays = (1, 2, 5, 10, 20, 30, 60, 120)
    kopf_settings.networking.error_backoffs = (1, 2, 5, 10, 20, 30)


def release_free_memory() -> bool:
    """Give the memory glibc keeps after ``free()`` back to the OS (``malloc_trim``); True if any.

    After a burst (a thousand objects converging: JSON bodies, status dicts, client buffers in worker
    threads) most of that memory is free again but stays resident in glibc's fragmented heaps: about
    40 MiB of an idle operator at 1000 ProxmoxVMs. On other C libraries this does nothing.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


FULL_COLLECTION_EVERY = 10  # intervals


def collect_and_freeze(*, full: bool) -> int:
    """Collect garbage, then move the survivors out of the collector's sight (``gc.freeze``).

    At a thousand objects the heap holds ~180k tracked objects that live as long as the process;
    Python's own full collections walked them all about once a minute, ~0.2% of a core at idle.
    Frozen objects are no longer walked. They are still freed by reference counting; only a cycle
    among them would wait, so every ``full`` call unfreezes first and walks everything once.
    Returns the number of frozen objects.
    """
    if full:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def release_memory_periodically(interval: float) -> None:
    """Once per interval: freeze the long-lived heap (a full walk every few intervals) and hand free
    memory back to the OS, so neither the collector nor bursts cost an idle operator much."""
    ticks = 0
    while True:
        await asyncio.sleep(interval)
        collect_and_freeze(full=ticks % FULL_COLLECTION_EVERY == 0)
        release_free_memory()
        ticks += 1


def run_operator(settings: OperatorSettings) -> int:
    """Run until SIGINT/SIGTERM; return the process exit code."""
    import kopf

    from k3s_deploy.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if settings.metrics_port is not None:
        from k3s_deploy.metrics import start_metrics_server

        start_metrics_server(settings.metrics_port, settings.metrics_address)

    from k3s_deploy.handlers import k3scluster_entry, proxmoxvm

    registry = kopf.get_default_registry()
    k3scluster_entry.register(registry)
    proxmoxvm.register(registry, peering_clusterwide=None if settings.standalone else not settings.namespaces)
    operator_settings = settings
    priority, identity = peering_priority(settings), peering_identity()

    trimmer: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        apply_kopf_settings(settings, operator_settings, priority=priority)
        if not operator_settings.standalone:
            from k3s_deploy.adapters.peering import create_peering
            from k3s_deploy.handlers.peering import ensure_peering

            await ensure_peering(
                create_peering, name=operator_settings.peering_name, namespaces=operator_settings.namespaces
            )
        trimmer.append(asyncio.create_task(release_memory_periodically(operator_settings.resync_seconds)))

    @kopf.on.cleanup(registry=registry)
    async def stop_trimming(**_: Any) -> None:
        for task in trimmer:
            task.cancel()

    runtime = build_runtime(settings)
    if not settings.standalone:
        from k3s_deploy.handlers.peering import PeeringGate

        runtime.gate = PeeringGate(identity=identity, priority=priority, name=settings.peering_name)
    scope = ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    log.info(
        "k3s-deploy operator starting: %s, %s", scope, "standalone" if settings.standalone else "peering"
    )
    try:
        kopf.run(
            registry=registry,
            standalone=settings.standalone,
            peering_name=settings.peering_name,
            namespaces=settings.namespaces,
            clusterwide=not settings.namespaces,
            liveness_endpoint=settings.liveness_endpoint,
            identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str, not exported
            memo=kopf.Memo(runtime=runtime),
        )
    except Exception:
        log.exception("the operator stopped on an error")
        return 1
    return 0
