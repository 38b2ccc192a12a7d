"""The one place the operator is wired: the real adapters behind the ports, in one typed container.

Handlers receive the :class:`Runtime` through kopf's ``memo`` and never build an adapter themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from k3s_deploy.handlers.peering import PeeringGate
from k3s_deploy.handlers.scheduler import Scheduler
from k3s_deploy.ports.kube import KubeGateway
from k3s_deploy.ports.proxmox import ProxmoxCredentials, VmSummary
from k3s_deploy.services.proxmoxvm.inventory import Sessions
from k3s_deploy.services.proxmoxvm.work import Memory
from k3s_deploy.settings import OperatorSettings

if TYPE_CHECKING:  # the K3sCluster controller's modules load at its first use (cluster_ports)
    from k3s_deploy.services.k3scluster.state import Deps


@dataclass
class Runtime:
    """Operator-wide state shared by every handler invocation (one per process)."""

    settings: OperatorSettings
    kube: KubeGateway
    sessions: Sessions
    clusters: Deps | None = None  # the K3sCluster ports; see cluster_ports
    memories: dict[str, Memory] = field(default_factory=dict)  # per ProxmoxVM
    failures: dict[str, int] = field(default_factory=dict)  # failed K3sCluster passes in a row
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)
    # our last status write until the watch delivers it (handlers.engine.current); not a record
    last_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the resourceVersion that write left, and whether it was the body's own (the write changed nothing)
    written_versions: dict[str, tuple[str, bool]] = field(default_factory=dict)
    last_annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # slim, for the ProxmoxVM scheduler
    models: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # validated ProxmoxVM, by its input
    scheduler: Scheduler | None = None  # the ProxmoxVM scheduler, started on the first event
    gate: PeeringGate | None = None  # HA: holds the scheduler while another replica is in charge
    build_clusters: Callable[[], Deps] | None = None  # makes ``clusters`` at the first K3sCluster

    def cluster_ports(self) -> Deps:
        """The K3sCluster ports, made on first use: an operator without a K3sCluster never imports
        that controller's services and model (about 4 MiB)."""
        if self.clusters is None:
            if self.build_clusters is None:
                raise RuntimeError("the runtime has no K3sCluster ports wired")
            self.clusters = self.build_clusters()
        return self.clusters

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
            self.failures,
            self.locks,
            self.wakeups,
            self.seen,
            self.last_status,
            self.written_versions,
            self.last_annotations,
            self.bodies,
            self.models,
        ):
            table.pop(uid, None)


def build_runtime(settings: OperatorSettings) -> Runtime:
    """Wire the real adapters behind the ports."""
    from k3s_deploy.adapters.kube import KubernetesGateway
    from k3s_deploy.adapters.proxmox import ProxmoxerConnector
    from k3s_deploy.services.secret_cache import SecretCachingGateway

    connector = ProxmoxerConnector(
        timeout=settings.proxmox_timeout_seconds, concurrency=settings.proxmox_concurrency
    )
    # A cached VM list (and credentials Secret) younger than most of a resync interval serves every
    # object of a credential: O(1) reads per interval, not one per object.
    max_age = settings.resync_seconds * 0.9
    sessions = Sessions(connector, max_age=max_age)
    return Runtime(
        settings=settings,
        kube=SecretCachingGateway(KubernetesGateway(concurrency=settings.kube_concurrency), max_age=max_age),
        sessions=sessions,
        build_clusters=cluster_deps(settings, sessions),
    )


def cluster_deps(settings: OperatorSettings, sessions: Sessions) -> Callable[[], Deps]:
    """The adapters behind the K3sCluster ports, built now (a bad CA file fails the start-up); the
    ports themselves, whose module imports the K3sCluster model, at the first call."""
    from k3s_deploy.adapters.artefacts import HttpArtefactFetcher
    from k3s_deploy.adapters.channels import HttpChannelServer
    from k3s_deploy.adapters.kube_children import KubeClusterObjects
    from k3s_deploy.adapters.ssh_lazy import LazySshRunner
    from k3s_deploy.adapters.target_cluster import KubernetesTargetCluster

    async def list_vms(credentials: ProxmoxCredentials) -> list[VmSummary]:
        snapshot = await sessions.get(credentials).inventory.get()
        return snapshot.vms

    objects, target = KubeClusterObjects(), KubernetesTargetCluster()
    ssh = LazySshRunner(max_output_bytes=settings.ssh_max_output_bytes)
    channels = HttpChannelServer(settings.fetch_allow_list)
    artefacts = HttpArtefactFetcher(
        settings.fetch_allow_list,
        directory=settings.fetch_dir,
        budget_bytes=settings.fetch_budget_bytes,
        extra_ca=settings.fetch_ca_file,
    )

    def build() -> Deps:
        from k3s_deploy.services.k3scluster.state import Deps

        return Deps(
            objects=objects,
            ssh=ssh,
            target=target,
            list_vms=list_vms,
            proxmox=lambda credentials: sessions.get(credentials).client,
            channels=channels,
            channel_check_seconds=settings.channel_check_seconds,
            artefacts=artefacts,
        )

    return build
