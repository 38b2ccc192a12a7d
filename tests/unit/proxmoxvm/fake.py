"""An in-memory Proxmox for unit tests of the ProxmoxVM services (no HTTP, no threads).

It keeps the PVE semantics the services depend on: tasks that run until ``finish_tasks()``, the clone
lock, nextid, tags normalised, pending changes on a running VM, vmid collisions, call counting.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from k3s_deploy.errors import (
    GuestFileUnreadable,
    GuestNotReady,
    K3sDeployError,
    ProxmoxBusy,
    ProxmoxNotFound,
    ProxmoxRejected,
)
from k3s_deploy.ports.kube import KubeGateway
from k3s_deploy.ports.proxmox import (
    GuestInterface,
    NodeSummary,
    PowerAction,
    ProxmoxClient,
    ProxmoxConnector,
    ProxmoxCredentials,
    TaskStatus,
    VmSummary,
)
from k3s_deploy.services.proxmoxvm.placement import disk_storages

GIB = 1024**3
CI_KEYS = ("ciuser", "sshkeys", "ipconfig0", "nameserver", "searchdomain")
HOTPLUG = {"name", "tags", "description", *CI_KEYS}


@dataclass
class FakeVm:
    vmid: int
    node: str
    config: dict[str, Any]
    status: str = "stopped"
    template: bool = False
    lock: str | None = None
    pending: dict[str, Any] = field(default_factory=dict)
    uptime: int = 0
    agent_interfaces: list[GuestInterface] | None = None
    ci_drive: dict[str, Any] = field(default_factory=dict)  # what the cloud-init drive was built from
    guest_files: dict[str, bytes] = field(default_factory=dict)  # what agent/file-read finds
    booted: dict[str, Any] = field(default_factory=dict)  # the cloud-init data the guest booted with

    def ci_values(self) -> dict[str, Any]:
        return {k: self.config[k] for k in CI_KEYS if k in self.config}

    def boot(self) -> None:
        """A start (or the start half of a reboot): pending changes apply, the drive is rebuilt."""
        self.config.update(self.pending)
        self.pending.clear()
        self.ci_drive = self.ci_values()
        self.booted = dict(self.ci_drive)

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(t for t in str(self.config.get("tags", "")).split(";") if t)

    def summary(self) -> VmSummary:
        size = 0
        for part in str(self.config.get("scsi0", "")).split(","):
            if part.startswith("size="):
                size = int(part[5:-1]) * GIB
        return VmSummary(
            vmid=self.vmid,
            node=self.node,
            name=str(self.config.get("name", "")),
            status=self.status,
            template=self.template,
            tags=self.tags,
            lock=self.lock,
            maxcpu=int(self.config.get("cores", 1)) * int(self.config.get("sockets", 1)),
            maxmem=int(self.config.get("memory", 512)) * 1024**2,
            maxdisk=size,
            uptime=self.uptime,
        )


@dataclass
class FakeTask:
    upid: str
    node: str
    action: str
    vmid: int
    done: bool = False
    exitstatus: str | None = None
    effect: Any = None  # callable run when the task finishes OK


class FakeProxmox:
    """Implements the ProxmoxClient protocol in memory."""

    def __init__(self) -> None:
        self.nodes_: dict[str, NodeSummary] = {
            "pve1": NodeSummary("pve1", "online", mem=2 * GIB, maxmem=16 * GIB),
            "pve2": NodeSummary("pve2", "online", mem=1 * GIB, maxmem=16 * GIB),
        }
        self.vms: dict[int, FakeVm] = {}
        self.tasks: dict[str, FakeTask] = {}
        self.calls: Counter[str] = Counter()
        self.fail: dict[str, K3sDeployError] = {}  # method name -> error raised once
        self.fail_task: dict[str, str] = {}  # action -> exit status for the next such task
        self.nextid_override: int | None = None
        self.storages: dict[str, bool] = {}  # storage id -> shared; an unlisted storage counts as shared
        self._pid = itertools.count(1000)

    # -- helpers for tests --------------------------------------------------------------------------

    def add_vm(self, vmid: int, node: str = "pve1", *, template: bool = False, **config: Any) -> FakeVm:
        config.setdefault("name", f"vm{vmid}")
        config.setdefault("cores", 1)
        config.setdefault("memory", 1024)
        config.setdefault("scsi0", f"local-lvm:vm-{vmid}-disk-0,size=8G")
        config.setdefault("ide2", f"local-lvm:vm-{vmid}-cloudinit,media=cdrom")
        config.setdefault("net0", f"virtio=BC:24:11:00:{vmid // 256 % 256:02X}:{vmid % 256:02X},bridge=vmbr0")
        vm = FakeVm(vmid=vmid, node=node, config=dict(config), template=template)
        self.vms[vmid] = vm
        return vm

    def finish_tasks(self) -> None:
        for task in self.tasks.values():
            if task.done:
                continue
            task.done = True
            failure = self.fail_task.pop(task.action, None)
            if failure:
                task.exitstatus = failure
                if task.action == "clone":
                    self.vms.pop(task.vmid, None)
                continue
            task.exitstatus = "OK"
            if task.effect is not None:
                task.effect()

    def mutating_calls(self) -> int:
        return sum(
            n
            for k, n in self.calls.items()
            if k in {"clone", "update_config", "power", "destroy", "resize_disk"}
        )

    def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if name in self.fail:
            raise self.fail.pop(name)

    def _vm(self, node: str, vmid: int) -> FakeVm:
        vm = self.vms.get(vmid)
        if vm is None or vm.node != node:
            raise ProxmoxNotFound(f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
        return vm

    def _task(self, node: str, action: str, vmid: int, effect: Any = None) -> str:
        upid = f"UPID:{node}:{next(self._pid):08X}:00000001:00000001:{action}:{vmid}:root@pam:"
        self.tasks[upid] = FakeTask(upid, node, action, vmid, effect=effect)
        return upid

    # -- ProxmoxClient ------------------------------------------------------------------------------

    async def cluster_vms(self) -> list[VmSummary]:
        self._enter("cluster_vms")
        return [vm.summary() for vm in self.vms.values()]

    async def cluster_resources(self) -> tuple[list[VmSummary], list[NodeSummary]]:
        """Counted as ``cluster_vms`` (one read); subclasses that change the VM list change it here too."""
        return await self.cluster_vms(), list(self.nodes_.values())

    async def nodes(self) -> list[NodeSummary]:
        self._enter("nodes")
        return list(self.nodes_.values())

    async def shared_storages(self) -> dict[str, bool]:
        self._enter("shared_storages")
        return dict(self.storages)

    async def next_vmid(self, candidate: int | None = None) -> int:
        self._enter("next_vmid")
        if candidate is not None:
            if candidate in self.vms:
                raise ProxmoxBusy(f"VM {candidate} already exists", reason="VmidTaken")
            return candidate
        if self.nextid_override is not None:
            return self.nextid_override
        return next(i for i in itertools.count(100) if i not in self.vms)

    async def vm_config(self, node: str, vmid: int) -> dict[str, Any]:
        self._enter("vm_config")
        vm = self._vm(node, vmid)
        return {**vm.config, **vm.pending}

    async def vm_status(self, node: str, vmid: int) -> str:
        self._enter("vm_status")
        return self._vm(node, vmid).status

    async def vm_pending(self, node: str, vmid: int) -> list[dict[str, Any]]:
        self._enter("vm_pending")
        vm = self._vm(node, vmid)
        out = [{"key": k, "value": v} for k, v in vm.config.items()]
        out += [{"key": k, "pending": v} for k, v in vm.pending.items()]
        return out

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
        self._enter("clone")
        source = self._vm(node, template_vmid)
        if newid in self.vms:
            raise ProxmoxBusy(f"unable to create VM {newid}: config file already exists", reason="VmidTaken")
        if (
            target
            and target != node
            and not all(self.storages.get(s, True) for s in disk_storages(source.config))
        ):
            raise ProxmoxRejected(f"can't clone VM to node '{target}' (VM uses local storage)")
        config = dict(source.config)
        config["scsi0"] = config["scsi0"].replace(f"vm-{template_vmid}-", f"vm-{newid}-")
        if name:
            config["name"] = name
        if description:
            config["description"] = description
        vm = FakeVm(vmid=newid, node=target or node, config=config, lock="clone")
        self.vms[newid] = vm

        def unlock() -> None:
            vm.lock = None

        return self._task(node, "qmclone", template_vmid, unlock)

    async def update_config(
        self, node: str, vmid: int, changes: Mapping[str, Any], delete: Sequence[str] = ()
    ) -> None:
        self._enter("update_config")
        vm = self._vm(node, vmid)
        if vm.lock:
            raise ProxmoxBusy(f"VM is locked ({vm.lock})")
        for key, value in changes.items():
            if key == "sshkeys" and "invalid" in str(value):
                raise ProxmoxRejected("SSH public key validation error")
            if key == "tags":
                value = ";".join(sorted({t for t in str(value).lower().split(";") if t}))
            if vm.status == "running" and key not in HOTPLUG:
                vm.pending[key] = value
            else:
                vm.config[key] = value

    async def resize_disk(self, node: str, vmid: int, disk: str, size: str) -> str:
        self._enter("resize_disk")
        vm = self._vm(node, vmid)

        def grow() -> None:
            base = vm.config[disk].split(",size=")[0]
            vm.config[disk] = f"{base},size={size}"

        return self._task(node, "resize", vmid, grow)

    async def cloudinit_pending(self, node: str, vmid: int) -> list[dict[str, Any]]:
        """As PVE 7.2+: ``value`` from the drive, ``pending`` when the config differs, ``delete``."""
        self._enter("cloudinit_pending")
        vm = self._vm(node, vmid)
        current = vm.ci_values()
        out: list[dict[str, Any]] = []
        for key in sorted(set(current) | set(vm.ci_drive)):
            entry: dict[str, Any] = {"key": key}
            if key in vm.ci_drive:
                entry["value"] = vm.ci_drive[key]
            if key not in current:
                entry["delete"] = 1
            elif vm.ci_drive.get(key) != current[key]:
                entry["pending"] = current[key]
            out.append(entry)
        return out

    async def power(
        self, node: str, vmid: int, action: PowerAction, *, shutdown_timeout: int | None = None
    ) -> str:
        self._enter("power")
        self.calls[f"power:{action}"] += 1
        vm = self._vm(node, vmid)

        def apply() -> None:
            if action in ("start", "reboot"):
                vm.boot()
            if action in ("start", "reboot", "resume", "reset"):
                vm.status = "running"
                vm.uptime = 1
            else:
                vm.status = "stopped"
                vm.uptime = 0

        return self._task(
            node,
            {"start": "qmstart", "stop": "qmstop", "shutdown": "qmshutdown"}.get(action, action),
            vmid,
            apply,
        )

    async def destroy(self, node: str, vmid: int, *, purge: bool = True) -> str:
        self._enter("destroy")
        vm = self._vm(node, vmid)
        if vm.status == "running":
            raise ProxmoxRejected(f"VM {vmid} is running - destroy failed")
        return self._task(node, "qmdestroy", vmid, lambda: self.vms.pop(vmid, None))

    async def task_status(self, node: str, upid: str) -> TaskStatus:
        self._enter("task_status")
        task = self.tasks.get(upid)
        if task is None:
            raise ProxmoxRejected("no such task")
        return TaskStatus(upid=upid, node=node, running=not task.done, exitstatus=task.exitstatus)

    async def node_tasks(self, node: str, *, since: int, limit: int) -> list[TaskStatus]:
        """All tasks of the node (the fake's UPIDs all carry start time 1), running ones first."""
        self._enter("node_tasks")
        mine = [t for t in self.tasks.values() if t.node == node]
        mine.sort(key=lambda t: t.done)
        return [TaskStatus(t.upid, node, running=not t.done, exitstatus=t.exitstatus) for t in mine][:limit]

    async def agent_interfaces(self, node: str, vmid: int) -> list[GuestInterface]:
        self._enter("agent_interfaces")
        vm = self._vm(node, vmid)
        if vm.status != "running" or vm.agent_interfaces is None:
            raise GuestNotReady("QEMU guest agent is not running", reason="AgentNotResponding")
        return list(vm.agent_interfaces)

    async def read_guest_file(self, node: str, vmid: int, path: str, *, max_bytes: int) -> bytes:
        self._enter("read_guest_file")
        vm = self._vm(node, vmid)
        if vm.status != "running" or vm.agent_interfaces is None:
            raise GuestNotReady("QEMU guest agent is not running", reason="AgentNotResponding")
        data = vm.guest_files.get(path)
        if data is None or len(data) > max_bytes:
            raise GuestFileUnreadable(f"VM {vmid}: cannot read {path} through the guest agent")
        return data


class FakeConnector:
    def __init__(self, proxmox: FakeProxmox) -> None:
        self.proxmox = proxmox
        self.seen: list[ProxmoxCredentials] = []

    def connect(self, credentials: ProxmoxCredentials) -> ProxmoxClient:
        self.seen.append(credentials)
        return self.proxmox


class FakeKube:
    """KubeGateway in memory: Secrets, status writes, events."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.annotations: dict[str, str] = {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name)
        self.object_reads = 0
        self.list_delay = False  # yield to the loop in list_objects, as a real API call does

    async def read_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        self.object_reads += 1
        return self.objects.get((plural, namespace, name))

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get((namespace, name))

    async def list_objects(
        self, group: str, version: str, plural: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in label_selector.split(","))
        found = [
            copy.deepcopy(obj)  # a snapshot, as a real listing is
            for (kind, ns, _), obj in sorted(self.objects.items())
            if kind == plural
            and ns == namespace
            and wanted.items() <= ((obj.get("metadata") or {}).get("labels") or {}).items()
        ]
        if self.list_delay:
            await asyncio.sleep(0)  # the answer was read; others run before it arrives
        return found

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.statuses.append(dict(status))

    async def patch_annotations(
        self, group: str, version: str, plural: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        self.annotations.update(annotations)

    async def post_event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def stands_for_the_ports(
    proxmox: FakeProxmox, connector: FakeConnector, kube: FakeKube
) -> tuple[ProxmoxClient, ProxmoxConnector, KubeGateway]:
    """Never called: mypy checks here that each fake satisfies the port it stands for."""
    return proxmox, connector, kube
