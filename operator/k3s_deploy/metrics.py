"""Prometheus metrics: one typed function per thing the controllers observe.

Controllers and adapters call the small functions below instead of touching prometheus-client, so
metric names, label sets and label cardinality stay decided in one place (and documented in
docs/metrics.md). Labels only ever take bounded values: kinds, CamelCase condition reasons, HTTP
methods, Proxmox endpoint *templates* (``/nodes/{node}/qemu/{vmid}/status/start``, never a raw path),
SSH operation names and Proxmox task types. Object names appear in no label.

Everything lives in :data:`REGISTRY` (not the process-global default registry) so that importing this
module twice in tests or embedding the operator never raises "duplicated timeseries".
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from k3s_deploy.errors import K3sDeployError

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

NAMESPACE = "k3sdeploy"

ReconcileResult = Literal["success", "retry", "stalled", "error"]

# Reconciles take from milliseconds (no-op resync) to minutes (clone + boot + K3s install).
_RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# One HTTP call to the Proxmox API.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Proxmox tasks (clone, start, shutdown) and SSH operations (install K3s) run for seconds to minutes.
_TASK_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)

RECONCILES = Counter(
    "reconcile_total",
    "Reconcile attempts by kind, result and condition reason.",
    ["kind", "result", "reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "reconcile_errors_total",
    "Failed reconciles by kind and condition reason (transient and permanent).",
    ["kind", "reason", "transient"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "reconcile_duration_seconds",
    "Wall time of one reconcile by kind.",
    ["kind"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=_RECONCILE_BUCKETS,
)
PROXMOX_CALLS = Counter(
    "proxmox_requests_total",
    "Proxmox API requests by endpoint template, HTTP method and outcome.",
    ["endpoint", "method", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
PROXMOX_LATENCY = Histogram(
    "proxmox_request_duration_seconds",
    "Proxmox API request latency by endpoint template and HTTP method.",
    ["endpoint", "method"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=_CALL_BUCKETS,
)
PROXMOX_TASKS = Counter(
    "proxmox_tasks_total",
    "Proxmox tasks (UPIDs) waited for, by task type and outcome.",
    ["type", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
PROXMOX_TASK_DURATION = Histogram(
    "proxmox_task_duration_seconds",
    "Duration of Proxmox tasks from submission to end, by task type (qmclone, qmstart, ...).",
    ["type"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=_TASK_BUCKETS,
)
SSH_OPERATIONS = Counter(
    "ssh_operations_total",
    "SSH operations on guests by operation and outcome.",
    ["operation", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
SSH_DURATION = Histogram(
    "ssh_operation_duration_seconds",
    "Duration of SSH operations on guests by operation.",
    ["operation"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=_TASK_BUCKETS,
)
OBJECTS = Gauge(
    "objects",
    "Custom resources this operator instance handles, by kind and status.phase.",
    ["kind", "phase"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)


def _result(ok: bool) -> str:
    return "ok" if ok else "error"


def count_reconcile(kind: str, result: ReconcileResult, reason: str) -> None:
    """Count one reconcile; anything but success also counts as an error with its reason."""
    RECONCILES.labels(kind=kind, result=result, reason=reason).inc()
    if result != "success":
        RECONCILE_ERRORS.labels(kind=kind, reason=reason, transient=str(result == "retry").lower()).inc()


def count_reconcile_error(kind: str, error: BaseException) -> None:
    """Count a failed reconcile from the exception itself: its reason and transient/permanent class."""
    if isinstance(error, K3sDeployError):
        count_reconcile(kind, "retry" if error.transient else "stalled", error.reason)
    else:
        count_reconcile(kind, "error", type(error).__name__)


def observe_reconcile(kind: str, seconds: float, error: BaseException | None) -> None:
    """Record one finished reconcile pass: its wall time, and success or the error's reason.

    For controllers whose pass returns its outcome instead of raising (a pass that ends waiting for
    something on its way is a success: only errors count as errors)."""
    RECONCILE_DURATION.labels(kind=kind).observe(seconds)
    if error is None:
        count_reconcile(kind, "success", "Succeeded")
    else:
        count_reconcile_error(kind, error)


@contextmanager
def time_reconcile(kind: str) -> Iterator[None]:
    """Time a reconcile and count its outcome (success, or the error's reason) on the way out."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        count_reconcile_error(kind, exc)
        raise
    else:
        count_reconcile(kind, "success", "Succeeded")
    finally:
        RECONCILE_DURATION.labels(kind=kind).observe(time.perf_counter() - start)


# Path segments that follow these collection names are identifiers, not part of the endpoint.
_ID_AFTER = {
    "nodes": "{node}",
    "qemu": "{vmid}",
    "lxc": "{vmid}",
    "tasks": "{upid}",
    "storage": "{storage}",
    "pools": "{pool}",
    "users": "{userid}",
    "token": "{tokenid}",
    "snapshot": "{snapname}",
    "content": "{volume}",
}


def endpoint_template(path: str) -> str:
    """Turn a concrete Proxmox API path into its template so it can be a label.

    ``/api2/json/nodes/pve1/qemu/100/status/start`` -> ``/nodes/{node}/qemu/{vmid}/status/start``.
    """
    path = re.sub(r"^/?api2/(json|extjs)", "", path.split("?", 1)[0])
    parts = [p for p in path.split("/") if p]
    out: list[str] = []
    collection: str | None = None  # the previous segment, when it named a collection
    for part in parts:
        if collection is not None and collection in _ID_AFTER:
            out.append(_ID_AFTER[collection])
            collection = None  # an identifier is never itself a collection name
        else:
            out.append(part)
            collection = part
    return "/" + "/".join(out)


def observe_proxmox_call(endpoint: str, method: str, seconds: float, ok: bool) -> None:
    """Record one Proxmox API request; ``endpoint`` may be a raw path, it is templated here."""
    template = endpoint_template(endpoint)
    method = method.upper()
    PROXMOX_CALLS.labels(endpoint=template, method=method, result=_result(ok)).inc()
    PROXMOX_LATENCY.labels(endpoint=template, method=method).observe(seconds)


@contextmanager
def time_proxmox_call(endpoint: str, method: str) -> Iterator[None]:
    """Time the enclosed Proxmox request; an exception counts it as failed."""
    start = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        observe_proxmox_call(endpoint, method, time.perf_counter() - start, ok)


class _Request(Protocol):
    method: str | None
    url: str | None


class _Response(Protocol):
    """The parts of a ``requests.Response`` the hook reads (duck-typed: no requests import here)."""

    request: _Request
    elapsed: dt.timedelta
    status_code: int


def proxmox_response_hook(response: _Response, *_args: object, **_kwargs: object) -> None:
    """A ``requests`` response hook: records every Proxmox HTTP call the session makes.

    Wire it once per proxmoxer session: ``session.hooks["response"].append(proxmox_response_hook)``.
    HTTP errors count as failed calls; connection errors never produce a response (count them where
    the exception is mapped).
    """
    url = urlsplit(response.request.url or "")
    observe_proxmox_call(
        url.path,
        response.request.method or "GET",
        response.elapsed.total_seconds(),
        ok=response.status_code < 400,
    )


def observe_proxmox_task(task_type: str, seconds: float, ok: bool) -> None:
    """Record a finished Proxmox task (the ``type`` field of its UPID, e.g. ``qmclone``)."""
    PROXMOX_TASKS.labels(type=task_type, result=_result(ok)).inc()
    PROXMOX_TASK_DURATION.labels(type=task_type).observe(seconds)


# The SSH operations recorded (the label's whole value set; docs/metrics.md lists them).
SshOperation = Literal[
    "connect",
    "probe",
    "install_k3s",
    "upgrade_k3s",
    "reconfigure_k3s",
    "convert_etcd",
    "uninstall_k3s",
    "fetch_kubeconfig",
    "upload",
]


def observe_ssh(operation: SshOperation, seconds: float, ok: bool) -> None:
    """Record one SSH operation on a guest (see :data:`SshOperation`)."""
    SSH_OPERATIONS.labels(operation=operation, result=_result(ok)).inc()
    SSH_DURATION.labels(operation=operation).observe(seconds)


@contextmanager
def time_ssh(operation: SshOperation) -> Iterator[None]:
    """Time the enclosed SSH operation; an exception counts it as failed."""
    start = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        observe_ssh(operation, time.perf_counter() - start, ok)


class _PhaseBook:
    """Which phase each object is in, so the per-phase gauge stays exact as objects move and vanish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str, str], str] = {}

    def set(self, kind: str, namespace: str, name: str, phase: str | None) -> None:
        key = (kind, namespace, name)
        with self._lock:
            old = self._phases.pop(key, None)
            if old is not None:
                OBJECTS.labels(kind=kind, phase=old).dec()
            if phase is not None:
                self._phases[key] = phase
                OBJECTS.labels(kind=kind, phase=phase).inc()


_PHASES = _PhaseBook()


def set_object_phase(kind: str, namespace: str, name: str, phase: str) -> None:
    """Record the phase an object is now in (call after writing status.phase)."""
    _PHASES.set(kind, namespace, name, phase or "Unknown")


def forget_object(kind: str, namespace: str, name: str) -> None:
    """Drop an object from the per-phase gauge (call when it is deleted)."""
    _PHASES.set(kind, namespace, name, None)


@dataclass
class MetricsServer:
    """A running /metrics endpoint; ``port`` is the bound port (useful when 0 was asked)."""

    address: str
    port: int
    server: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(port: int, address: str = "127.0.0.1") -> MetricsServer:
    """Serve :data:`REGISTRY` at ``http://address:port/metrics`` from a daemon thread.

    The default address is loopback; a Deployment sets ``K3SD_METRICS_ADDRESS=0.0.0.0`` so Prometheus
    can scrape the pod.
    """
    server, thread = start_http_server(port, addr=address, registry=REGISTRY)
    return MetricsServer(address=address, port=int(server.server_port), server=server, thread=thread)
