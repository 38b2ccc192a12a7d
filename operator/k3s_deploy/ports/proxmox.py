"""The Proxmox VE calls the services need, as a typing.Protocol seam.

The adapter (adapters/proxmox.py) speaks proxmoxer; unit tests use an in-memory fake. Every method
raises only errors from :mod:`k3s_deploy.errors`. Values are already decoded: ``sshkeys`` is plain
text (the adapter URL-encodes it as PVE demands), booleans are Python booleans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

PowerAction = Literal["start", "stop", "shutdown", "reboot", "reset", "resume"]


@dataclass(frozen=True)
class VmSummary:
    """One qemu guest as ``GET /cluster/resources?type=vm`` lists it."""

    vmid: int
    node: str
    name: str = ""
    status: str = "unknown"
    template: bool = False
    tags: frozenset[str] = frozenset()
    lock: str | None = None
    maxcpu: int = 0
    maxmem: int = 0
    maxdisk: int = 0
    uptime: int = 0
    pool: str | None = None


@dataclass(frozen=True)
class NodeSummary:
    """One cluster node as ``GET /nodes`` lists it."""

    node: str
    status: str
    mem: int = 0
    maxmem: int = 0

    @property
    def free_memory(self) -> int:
        return max(self.maxmem - self.mem, 0)


@dataclass(frozen=True)
class TaskStatus:
    """A Proxmox task: running, or stopped with an exit status ("OK", "WARNINGS: n" or an error)."""

    upid: str
    node: str
    running: bool
    exitstatus: str | None = None
    starttime: int | None = None  # epoch seconds, the node's clock (task lists only)
    endtime: int | None = None

    @property
    def succeeded(self) -> bool:
        return not self.running and (
            self.exitstatus == "OK" or (self.exitstatus or "").startswith("WARNINGS")
        )


@dataclass(frozen=True)
class GuestInterface:
    """One interface reported by the QEMU guest agent."""

    name: str
    mac: str
    addresses: tuple[str, ...] = field(default_factory=tuple)


class ProxmoxClient(Protocol):
    """One authenticated connection to one Proxmox VE cluster (one credential)."""

    async def cluster_vms(self) -> list[VmSummary]:
        """Every qemu guest the credential may see, on every node (one call)."""
        ...

    async def cluster_resources(self) -> tuple[list[VmSummary], list[NodeSummary]]:
        """The qemu guests and the nodes (those with Sys.Audit) in one ``/cluster/resources`` read."""
        ...

    async def nodes(self) -> list[NodeSummary]: ...

    async def shared_storages(self) -> dict[str, bool]:
        """Storage id -> shared (reachable from every node), for the storages the credential may see."""
        ...

    async def next_vmid(self, candidate: int | None = None) -> int:
        """The first free vmid, or ``candidate`` if free; raises ProxmoxBusy if ``candidate`` is taken."""
        ...

    async def vm_config(self, node: str, vmid: int) -> dict[str, Any]:
        """The VM's configuration with pending values applied (what it will be after a restart)."""
        ...

    async def vm_status(self, node: str, vmid: int) -> str:
        """The live power state (``running``/``stopped``; ``paused`` from qmpstatus), not the lagging list."""
        ...

    async def vm_pending(self, node: str, vmid: int) -> list[dict[str, Any]]:
        """Entries of ``GET .../pending``: keys whose new value waits for a restart."""
        ...

    async def clone(
        self,
        node: str,
        template_vmid: int,
        newid: int,
        *,
        name: str | None = None,
        target: str | None = None,
        full: bool | None = None,
        storage: str | None = None,
        pool: str | None = None,
        description: str | None = None,
    ) -> str:
        """Start a clone; returns the task UPID."""
        ...

    async def update_config(
        self, node: str, vmid: int, changes: Mapping[str, Any], delete: Sequence[str] = ()
    ) -> None:
        """Synchronous ``PUT .../config``."""
        ...

    async def resize_disk(self, node: str, vmid: int, disk: str, size: str) -> str: ...

    async def cloudinit_pending(self, node: str, vmid: int) -> list[dict[str, Any]]:
        """Entries of ``GET .../cloudinit``: ``value`` is what the drive was generated from, ``pending``
        a newer config value, ``delete`` a key removed since (PVE 7.2+)."""
        ...

    async def power(
        self, node: str, vmid: int, action: PowerAction, *, shutdown_timeout: int | None = None
    ) -> str:
        """Start a power task; returns its UPID. ``shutdown_timeout`` (s) before a forced stop."""
        ...

    async def destroy(self, node: str, vmid: int, *, purge: bool = True) -> str: ...

    async def task_status(self, node: str, upid: str) -> TaskStatus: ...

    async def node_tasks(self, node: str, *, since: int, limit: int) -> list[TaskStatus]:
        """Every task of ``node`` started at or after ``since`` (epoch s), running ones included; at
        most ``limit`` (running ones first, then the newest finished ones)."""
        ...

    async def agent_interfaces(self, node: str, vmid: int) -> list[GuestInterface]:
        """Raises GuestNotReady while the agent is not answering."""
        ...

    async def read_guest_file(self, node: str, vmid: int, path: str, *, max_bytes: int) -> bytes:
        """A file inside the guest, read by its QEMU guest agent (``agent/file-read``).

        Raises GuestNotReady while the VM or its agent is not running, GuestFileUnreadable when the
        file is missing or no agent is configured, and a file longer than
        ``max_bytes`` raises GuestFileUnreadable too (its content is never returned cut short).
        """
        ...


@dataclass(frozen=True)
class ProxmoxCredentials:
    """What a credentials Secret holds, validated. Never logged: ``__repr__`` hides the secrets."""

    url: str
    token_id: str | None = None
    token_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_cert: str | None = field(default=None, repr=False)
    fingerprint: str | None = None
    insecure_skip_tls_verify: bool = False

    @property
    def key(self) -> str:
        """A stable identity for pooling clients: changes whenever any credential value changes."""
        import hashlib

        material = "\0".join(
            part or ""
            for part in (
                self.url,
                self.token_id,
                self.token_secret,
                self.username,
                self.password,
                self.ca_cert,
                self.fingerprint,
                str(self.insecure_skip_tls_verify),
            )
        )
        return hashlib.sha256(material.encode()).hexdigest()[:16]


class ProxmoxConnector(Protocol):
    """Makes a client for a credential (the adapter pools connections per credential itself)."""

    def connect(self, credentials: ProxmoxCredentials) -> ProxmoxClient: ...
