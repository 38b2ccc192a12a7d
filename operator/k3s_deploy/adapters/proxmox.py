"""ProxmoxClient over proxmoxer + requests.

proxmoxer is synchronous, so every call runs in a worker thread (``asyncio.to_thread``), at most
``concurrency`` at a time per credential. TLS verification is always on: the Secret's ``caCert`` is
written to a private temporary file handed to requests as the CA bundle. Errors are mapped onto the
operator's error tree here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from k3s_deploy import metrics
from k3s_deploy.adapters.proxmox_errors import AGENT_SILENT, map_exception
from k3s_deploy.adapters.proxmox_session import open_api
from k3s_deploy.errors import (
    CredentialsError,
    GuestFileUnreadable,
    GuestNotReady,
    ProxmoxRejected,
    ProxmoxUnavailable,
)
from k3s_deploy.ports.proxmox import (
    GuestInterface,
    NodeSummary,
    PowerAction,
    ProxmoxCredentials,
    TaskStatus,
    VmSummary,
)

T = TypeVar("T")

__all__ = ["ProxmoxerClient", "ProxmoxerConnector", "encode_value", "map_exception", "split_tags"]


def split_tags(raw: object) -> frozenset[str]:
    """PVE's tag string (``a;b``; input also accepts ``,`` and spaces) as a set."""
    if not raw:
        return frozenset()
    return frozenset(t for t in re.split(r"[;, ]+", str(raw).lower()) if t)


def encode_value(value: object) -> object:
    """Form-encode one config value: booleans as 1/0 (PVE refuses 'True')."""
    if isinstance(value, bool):
        return 1 if value else 0
    return value


def _is_qemu(item: Mapping[str, Any]) -> bool:
    return item.get("type", "qemu") == "qemu" and "vmid" in item


def _vm_summary(item: Mapping[str, Any]) -> VmSummary:
    return VmSummary(
        vmid=int(item["vmid"]),
        node=str(item.get("node", "")),
        name=str(item.get("name", "")),
        status=str(item.get("status", "unknown")),
        template=bool(int(item.get("template", 0) or 0)),
        tags=split_tags(item.get("tags")),
        lock=item.get("lock") or None,
        maxcpu=int(item.get("maxcpu", 0) or 0),
        maxmem=int(item.get("maxmem", 0) or 0),
        maxdisk=int(item.get("maxdisk", 0) or 0),
        uptime=int(item.get("uptime", 0) or 0),
        pool=item.get("pool") or None,
    )


def _node_summary(item: Mapping[str, Any]) -> NodeSummary:
    """A node of ``GET /nodes`` or a ``type: node`` entry of ``/cluster/resources`` (same fields)."""
    return NodeSummary(
        node=str(item["node"]),
        status=str(item.get("status", "unknown")),
        mem=int(item.get("mem", 0) or 0),
        maxmem=int(item.get("maxmem", 0) or 0),
    )


class ProxmoxerClient:
    """A ProxmoxClient for one credential. Thread-safe; login happens lazily in a worker thread."""

    def __init__(self, credentials: ProxmoxCredentials, *, timeout: float, concurrency: int) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._semaphore = asyncio.BoundedSemaphore(concurrency)
        # Guest-agent reads of a booting guest wait seconds for "agent is not running": in the shared
        # pool, fifty booting guests held every slot and each answered agent delayed the reads after it.
        self._agent_slots = asyncio.BoundedSemaphore(concurrency)
        self._api: Any = None
        self._api_lock = threading.Lock()
        self._ca_path: str | None = None

    # -- plumbing ---------------------------------------------------------------------------------

    def _verify(self) -> str | bool:
        if self._credentials.fingerprint or self._credentials.insecure_skip_tls_verify:
            return False  # pinning replaces CA validation (checked by the mounted adapter)
        if not self._credentials.ca_cert:
            return True
        if self._ca_path is None:
            fd, path = tempfile.mkstemp(prefix="k3sd-pve-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(self._credentials.ca_cert)
            self._ca_path = path
        return self._ca_path

    def _build(self) -> Any:
        creds = self._credentials
        parts = urlsplit(creds.url if "://" in creds.url else f"https://{creds.url}")
        if parts.scheme != "https":
            raise CredentialsError(f"Proxmox url {creds.url!r} must use https")
        api = open_api(creds, verify=self._verify(), timeout=self._timeout)
        api._store["session"].hooks["response"].append(metrics.proxmox_response_hook)
        return api

    def _api_sync(self) -> Any:
        with self._api_lock:
            if self._api is None:
                self._api = self._build()
            return self._api

    async def _call(
        self, what: str, fn: Callable[[Any], T], *, slots: asyncio.BoundedSemaphore | None = None
    ) -> T:
        def run() -> T:
            return fn(self._api_sync())

        async with slots or self._semaphore:
            try:
                return await asyncio.to_thread(run)
            except Exception as exc:
                raise map_exception(exc, what) from exc

    def close(self) -> None:
        """Forget the session and remove the CA bundle file."""
        self._api = None
        if self._ca_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._ca_path)
            self._ca_path = None

    # -- ProxmoxClient ----------------------------------------------------------------------------

    async def cluster_vms(self) -> list[VmSummary]:
        raw: list[dict[str, Any]] = await self._call(
            "list VMs", lambda api: api.cluster.resources.get(type="vm")
        )
        return [_vm_summary(item) for item in raw or [] if _is_qemu(item)]

    async def cluster_resources(self) -> tuple[list[VmSummary], list[NodeSummary]]:
        raw: list[dict[str, Any]] = await self._call(
            "list VMs and nodes", lambda api: api.cluster.resources.get()
        )
        vms = [_vm_summary(item) for item in raw or [] if _is_qemu(item)]
        nodes = [_node_summary(item) for item in raw or [] if item.get("type") == "node" and "node" in item]
        return vms, nodes

    async def nodes(self) -> list[NodeSummary]:
        raw: list[dict[str, Any]] = await self._call("list nodes", lambda api: api.nodes.get())
        return [_node_summary(n) for n in raw or []]

    async def shared_storages(self) -> dict[str, bool]:
        raw: list[dict[str, Any]] = await self._call(
            "list storages", lambda api: api.cluster.resources.get(type="storage")
        )
        return {str(s["storage"]): bool(int(s.get("shared", 0) or 0)) for s in raw or [] if s.get("storage")}

    async def next_vmid(self, candidate: int | None = None) -> int:
        params = {"vmid": candidate} if candidate is not None else {}
        value = await self._call("allocate vmid", lambda api: api.cluster.nextid.get(**params))
        return int(value)

    async def vm_config(self, node: str, vmid: int) -> dict[str, Any]:
        config: dict[str, Any] = await self._call(
            f"read config of VM {vmid}", lambda api: api.nodes(node).qemu(vmid).config.get()
        )
        config = dict(config or {})
        if "sshkeys" in config:
            config["sshkeys"] = unquote(str(config["sshkeys"]))
        return config

    async def vm_status(self, node: str, vmid: int) -> str:
        raw: dict[str, Any] = await self._call(
            f"read status of VM {vmid}", lambda api: api.nodes(node).qemu(vmid).status.current.get()
        )
        if raw.get("qmpstatus") == "paused":
            return "paused"
        return str(raw.get("status", "unknown"))

    async def vm_pending(self, node: str, vmid: int) -> list[dict[str, Any]]:
        pending: list[dict[str, Any]] = await self._call(
            f"read pending changes of VM {vmid}", lambda api: api.nodes(node).qemu(vmid).pending.get()
        )
        return list(pending or [])

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
        data = {
            "newid": newid,
            "name": name,
            "target": target,
            "full": encode_value(full) if full is not None else None,
            "storage": storage,
            "pool": pool,
            "description": description,
        }
        data = {k: v for k, v in data.items() if v is not None}
        upid = await self._call(
            f"clone template {template_vmid} to VM {newid}",
            lambda api: api.nodes(node).qemu(template_vmid).clone.post(**data),
        )
        return str(upid)

    async def update_config(
        self, node: str, vmid: int, changes: Mapping[str, Any], delete: Sequence[str] = ()
    ) -> None:
        data: dict[str, Any] = {}
        for key, value in changes.items():
            data[key] = quote(str(value), safe="") if key == "sshkeys" else encode_value(value)
        if delete:
            data["delete"] = ",".join(delete)
        await self._call(
            f"configure VM {vmid} ({', '.join(sorted(data))})",
            lambda api: api.nodes(node).qemu(vmid).config.put(**data),
        )

    async def resize_disk(self, node: str, vmid: int, disk: str, size: str) -> str:
        upid = await self._call(
            f"resize disk {disk} of VM {vmid}",
            lambda api: api.nodes(node).qemu(vmid).resize.put(disk=disk, size=size),
        )
        return str(upid)

    async def cloudinit_pending(self, node: str, vmid: int) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self._call(
            f"read the cloud-init drive state of VM {vmid}",
            lambda api: api.nodes(node).qemu(vmid).cloudinit.get(),
        )
        return [dict(e) for e in entries or []]

    async def power(
        self, node: str, vmid: int, action: PowerAction, *, shutdown_timeout: int | None = None
    ) -> str:
        data: dict[str, Any] = {}
        if action == "shutdown" and shutdown_timeout is not None:
            data = {"timeout": shutdown_timeout, "forceStop": 1}
        upid = await self._call(
            f"{action} VM {vmid}", lambda api: api.nodes(node).qemu(vmid).status(action).post(**data)
        )
        return str(upid)

    async def destroy(self, node: str, vmid: int, *, purge: bool = True) -> str:
        params = {"purge": encode_value(purge), "destroy-unreferenced-disks": encode_value(purge)}
        upid = await self._call(f"destroy VM {vmid}", lambda api: api.nodes(node).qemu(vmid).delete(**params))
        return str(upid)

    async def task_status(self, node: str, upid: str) -> TaskStatus:
        raw: dict[str, Any] = await self._call(
            f"read task {upid}", lambda api: api.nodes(node).tasks(upid).status.get()
        )
        return TaskStatus(
            upid=upid,
            node=node,
            running=str(raw.get("status")) == "running",
            exitstatus=raw.get("exitstatus"),
        )

    async def node_tasks(self, node: str, *, since: int, limit: int) -> list[TaskStatus]:
        raw: list[dict[str, Any]] = await self._call(
            f"list the tasks of node {node}",
            lambda api: api.nodes(node).tasks.get(source="all", since=since, limit=limit),
        )
        out = []
        for item in raw or []:
            running = "endtime" not in item or item.get("status") == "RUNNING"  # the list's own words
            status = None if running else str(item.get("status") or "unexpected status")
            start, end = item.get("starttime"), None if running else item.get("endtime")
            out.append(
                TaskStatus(
                    upid=str(item["upid"]),
                    node=node,
                    running=running,
                    exitstatus=status,
                    starttime=int(start) if start is not None else None,
                    endtime=int(end) if end is not None else None,
                )
            )
        return out

    async def agent_interfaces(self, node: str, vmid: int) -> list[GuestInterface]:
        try:
            raw: Any = await self._call(
                f"ask the guest agent of VM {vmid}",
                lambda api: api.nodes(node).qemu(vmid).agent("network-get-interfaces").get(),
                slots=self._agent_slots,
            )
        except (ProxmoxUnavailable, ProxmoxRejected) as exc:
            if AGENT_SILENT.search(exc.message):
                raise GuestNotReady(exc.message, reason="AgentNotResponding") from exc
            raise
        result = raw.get("result", []) if isinstance(raw, Mapping) else raw
        return [
            GuestInterface(
                name=str(i.get("name", "")),
                mac=str(i.get("hardware-address", "")).lower(),
                addresses=tuple(
                    str(a["ip-address"]) for a in i.get("ip-addresses", []) or [] if a.get("ip-address")
                ),
            )
            for i in result or []
        ]

    async def read_guest_file(self, node: str, vmid: int, path: str, *, max_bytes: int) -> bytes:
        what = f"read {path} in VM {vmid} through its guest agent"
        params: dict[str, Any] = {"file": path, "count": max_bytes + 1}
        try:
            try:
                raw: Any = await self._call(
                    what, lambda api: api.nodes(node).qemu(vmid).agent("file-read").get(**params)
                )
            except ProxmoxRejected as exc:
                if "count" not in exc.message:
                    raise
                # PVE 8 knows only `file` (and caps the read at 16 MiB itself)
                params = {"file": path}
                raw = await self._call(
                    what, lambda api: api.nodes(node).qemu(vmid).agent("file-read").get(**params)
                )
        except (ProxmoxUnavailable, ProxmoxRejected) as exc:
            if (
                "agent error" in exc.message.lower()
                or "no qemu guest agent configured" in exc.message.lower()
            ):
                raise GuestFileUnreadable(exc.message) from exc
            if AGENT_SILENT.search(exc.message):
                raise GuestNotReady(exc.message, reason="AgentNotResponding") from exc
            raise
        content = raw.get("content") if isinstance(raw, Mapping) else None
        if not isinstance(content, str):
            raise ProxmoxUnavailable(f"{what}: the answer has no content")
        data = content.encode("latin-1", errors="replace")  # PVE sends each byte as one code point
        if len(data) > max_bytes or raw.get("truncated"):
            raise GuestFileUnreadable(f"{what}: the file is larger than {max_bytes} bytes")
        return data


class ProxmoxerConnector:
    """Pools one :class:`ProxmoxerClient` per credential (a changed Secret makes a new one)."""

    def __init__(self, *, timeout: float, concurrency: int) -> None:
        self._timeout = timeout
        self._concurrency = concurrency
        self._clients: dict[str, ProxmoxerClient] = {}

    def connect(self, credentials: ProxmoxCredentials) -> ProxmoxerClient:
        client = self._clients.get(credentials.key)
        if client is None:
            client = ProxmoxerClient(credentials, timeout=self._timeout, concurrency=self._concurrency)
            self._clients[credentials.key] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
