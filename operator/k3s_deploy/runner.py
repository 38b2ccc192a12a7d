"""Start kopf with the project's settings and the handlers of both kinds.

kopf's own knobs are set in a startup handler from :class:`OperatorSettings`: scope, peering, watch
timeouts (watch streams can stall silently without them), where progress is kept (annotations under
``k3sdeploy.io/``, so ``status`` stays ours), which log records become Events, and error backoffs.
Shared runtime state (the Kubernetes gateway, Proxmox sessions, per-object memory) travels in kopf's
``memo`` as a :class:`Runtime`.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from k3s_deploy.settings import OperatorSettings

if TYPE_CHECKING:
    from k3s_deploy.handlers.peering import PeeringGate
    from k3s_deploy.handlers.scheduler import Scheduler

log = logging.getLogger(__name__)

ANNOTATION_PREFIX = "k3sdeploy.io"
FINALIZER = "k3sdeploy.io/finalizer"


@dataclass
class Runtime:
    """Operator-wide state shared by every handler invocation (one per process)."""

    settings: OperatorSettings
    kube: Any  # KubeGateway
    sessions: Any  # services.proxmoxvm.inventory.Sessions
    memories: dict[str, Any] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)
    last_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # slim, for the ProxmoxVM scheduler
    models: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # validated ProxmoxVM, by its input
    scheduler: Scheduler | None = None  # the ProxmoxVM scheduler, started on the first event
    gate: PeeringGate | None = None  # HA: holds the scheduler while another replica is in charge

    def lock(self, uid: str) -> asyncio.Lock:
        found = self.locks.get(uid)  # not setdefault: that would build a Lock on every call
        if found is None:
            found = self.locks[uid] = asyncio.Lock()
        return found

    def wakeup(self, uid: str) -> asyncio.Event:
        found = self.wakeups.get(uid)
        if found is None:
            found = self.wakeups[uid] = asyncio.Event()
        return found

    def forget(self, uid: str) -> None:
        for table in (
            self.memories,
            self.locks,
            self.wakeups,
            self.seen,
            self.last_status,
            self.last_annotations,
            self.bodies,
            self.models,
        ):
            table.pop(uid, None)


def build_runtime(settings: OperatorSettings) -> Runtime:
    """Wire the real adapters behind the ports."""
    from k3s_deploy.adapters.kube import KubernetesGateway
    from k3s_deploy.adapters.proxmox import ProxmoxerConnector
    from k3s_deploy.services.proxmoxvm.inventory import Sessions
    from k3s_deploy.services.secret_cache import SecretCachingGateway

    connector = ProxmoxerConnector(
        timeout=settings.proxmox_timeout_seconds, concurrency=settings.proxmox_concurrency
    )
    # A cached VM list (and credentials Secret) younger than most of a resync interval serves every
    # object of a credential: O(1) reads per interval, not one per object.
    max_age = settings.resync_seconds * 0.9
    return Runtime(
        settings=settings,
        kube=SecretCachingGateway(KubernetesGateway(concurrency=settings.kube_concurrency), max_age=max_age),
        sessions=Sessions(connector, max_age=max_age),
    )


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

    import k3s_deploy.handlers  # noqa: F401  - registers the handlers of both kinds

    registry = kopf.get_default_registry()
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
        from k3s_deploy.handlers.peering import PeeringGate, register

        runtime.gate = PeeringGate(identity=identity, priority=priority, name=settings.peering_name)
        register(registry, clusterwide=not settings.namespaces)
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
