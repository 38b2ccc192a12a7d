"""The simulator core: state, timing, guest life cycle, change notification and persistence."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path
from typing import Any

from k3s_deploy_lab.pvesim import cloudinit, dhcp, persistence
from k3s_deploy_lab.pvesim.apierror import ApiError, not_found_config
from k3s_deploy_lab.pvesim.faults import Counts, Faults
from k3s_deploy_lab.pvesim.model import VM, State
from k3s_deploy_lab.pvesim.qga import AgentChannel
from k3s_deploy_lab.pvesim.tasks import TaskRunner
from k3s_deploy_lab.pvesim.vmconfig import remove_key

SAVE_DELAY = 1.0
MAX_FINISHED_TASKS = 5000
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class Sim:
    """Everything a request handler needs; all mutation happens on the event loop thread."""

    def __init__(self, state: State, state_path: Path | None = None) -> None:
        self.state = state
        self.state_path = state_path
        self.faults = Faults()
        self.counts = Counts()
        self.tasks = TaskRunner(self)
        self._event: asyncio.Event | None = None
        self._save_handle: asyncio.TimerHandle | None = None
        self._boot_handles: dict[int, asyncio.TimerHandle] = {}
        # where the guests' agents answer file reads (registered by the guests process), if anywhere
        self.agent_channel: AgentChannel | None = None

    # -- timing ---------------------------------------------------------------------------------
    def seconds(self, key: str) -> float:
        """A timing value scaled by ``timing.scale`` (the auth failure delay is not scaled)."""
        value = float(self.state.timing[key])
        return value if key == "authFailureDelay" else value * float(self.state.timing["scale"])

    def task_seconds(self, type_: str) -> float:
        return float(self.state.timing["tasks"].get(type_, 1.0)) * float(self.state.timing["scale"])

    # -- lookups --------------------------------------------------------------------------------
    def vm(self, node: str, vmid: int) -> VM:
        vm = self.state.vms.get(vmid)
        if vm is None or vm.node != node:
            raise not_found_config(node, vmid)
        return vm

    def node_check(self, node: str) -> None:
        n = self.state.nodes.get(node)
        if n is None:
            raise ApiError(
                500,
                f"hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known",
            )
        if not n.online:
            raise ApiError(595, "No route to host")

    # -- changes --------------------------------------------------------------------------------
    def start(self) -> None:
        """Called once the loop runs: resume tasks, re-arm boot timers."""
        self._event = asyncio.Event()
        self.tasks.resume()
        for vm in self.state.vms.values():
            if vm.status == "running":
                if vm.booted is None:
                    vm.booted = cloudinit.boot_snapshot(vm)
                    vm.ci_drive = dict(vm.booted)
                if not vm.pid:
                    self.state.next_pid += 1
                    vm.pid = self.state.next_pid
                self._arm_boot(vm)

    def changed(self, guest: bool = False) -> None:
        """Record a state change: save soon; bump the guest revision when guests can see it."""
        if guest:
            self.state.revision += 1
            if self._event is not None:
                self._event.set()
                self._event = asyncio.Event()
        if self.state_path is not None and self._save_handle is None:
            self._save_handle = asyncio.get_running_loop().call_later(SAVE_DELAY, self.flush)

    def flush(self) -> None:
        self._save_handle = None
        self._prune_tasks()
        if self.state_path is not None:
            persistence.save(self.state, self.state_path)

    def _prune_tasks(self) -> None:
        finished = [t for t in self.state.tasks.values() if t.status == "stopped"]
        if len(finished) > MAX_FINISHED_TASKS:
            finished.sort(key=lambda t: t.endtime or 0)
            for task in finished[: len(finished) - MAX_FINISHED_TASKS]:
                del self.state.tasks[task.upid]

    async def wait_revision(self, since: int, wait: float) -> int:
        """Return as soon as the guest revision differs from ``since`` (or after ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while self.state.revision == since and self._event is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                break
        return self.state.revision

    # -- guest life cycle -----------------------------------------------------------------------
    def boot(self, vm: VM) -> None:
        """Power on: apply pending changes, rebuild the cloud-init drive, start the boot clock."""
        apply_pending(vm)
        now = time.time()
        vm.status = vm.qmpstatus = "running"
        vm.prev_status, vm.status_changed_at = ("stopped", now)
        vm.started_at = now
        self.state.next_pid += 1
        vm.pid = self.state.next_pid
        vm.booted = cloudinit.boot_snapshot(vm)
        vm.ci_drive = dict(vm.booted)
        self.nic_addresses(vm)  # DHCP leases are taken at boot
        self._arm_boot(vm)
        self.changed(guest=True)

    def boot_again(self, vm: VM) -> None:
        """A hard reset: the guest reboots without a new cloud-init drive or pending changes."""
        self._arm_boot(vm)
        self.changed(guest=True)

    def halt(self, vm: VM) -> None:
        now = time.time()
        vm.prev_status, vm.status_changed_at = (vm.status, now)
        vm.status = vm.qmpstatus = "stopped"
        vm.started_at = None
        vm.booted = None
        vm.pid = 0
        handle = self._boot_handles.pop(vm.vmid, None)
        if handle:
            handle.cancel()
        self.changed(guest=True)

    def _arm_boot(self, vm: VM) -> None:
        """Bump the revision when the guest finishes booting (its agent starts answering)."""
        assert vm.started_at is not None
        delay = vm.started_at + self.seconds("bootDelay") - time.time()
        old = self._boot_handles.pop(vm.vmid, None)
        if old:
            old.cancel()
        if delay > 0:
            self._boot_handles[vm.vmid] = asyncio.get_running_loop().call_later(delay, self.changed, True)

    def agent_enabled(self, vm: VM) -> bool:
        value = vm.config.get("agent", "0")
        first = value.split(",")[0]
        if first.startswith("enabled="):
            first = first.split("=", 1)[1]
        return first in ("1", "on", "yes", "true")

    def booted(self, vm: VM) -> bool:
        """Running, not paused, and past the boot delay (the guest OS is up)."""
        return (
            vm.status == "running" and vm.qmpstatus == "running" and vm.started_at is not None
            and time.time() >= vm.started_at + self.seconds("bootDelay")
        )  # fmt: skip

    def agent_ready(self, vm: VM) -> bool:
        return self.agent_enabled(vm) and self.booted(vm)

    def nic_addresses(self, vm: VM) -> dict[int, tuple[str, int]]:
        """The running guest's IPv4 address and prefix per NIC index (loopback range only)."""
        out: dict[int, tuple[str, int]] = {}
        if vm.booted is None:
            return out
        for key in sorted(k for k in vm.booted if k.startswith("_mac")):
            idx = int(key[4:])
            mode, cidr = cloudinit.ip_mode(vm.booted, idx)
            if mode == "dhcp":
                prefix = ipaddress.IPv4Network(self.state.dhcp_range).prefixlen
                out[idx] = (dhcp.lease(self.state, vm.booted[key]), prefix)
            elif mode == "static" and cidr:
                iface = ipaddress.IPv4Interface(cidr)
                if iface.ip in LOOPBACK:
                    out[idx] = (str(iface.ip), iface.network.prefixlen)
        return out

    def addresses(self, vm: VM) -> list[str]:
        """IPv4 addresses of the running guest, NIC by NIC."""
        return [address for address, _ in self.nic_addresses(vm).values()]

    def guest(self, vm: VM) -> dict[str, Any]:
        """One entry of the admin `guests` document (the contract with the lab guests)."""
        booted = vm.booted if vm.booted is not None else cloudinit.boot_snapshot(vm)
        visible = vm.status == "running" and vm.qmpstatus == "running"
        return {
            "vmid": vm.vmid,
            "node": vm.node,
            "name": vm.name,
            "status": "running" if visible else "stopped",
            "agent": self.agent_enabled(vm),
            "agentReady": self.booted(vm),  # booted past the delay (contract name; agent or not)
            "addresses": self.addresses(vm) if visible else [],
            "ciuser": booted.get("ciuser"),
            "sshkeys": cloudinit.decode_sshkeys(booted.get("sshkeys")),
            "instanceId": vm.instance_id,
            "hostname": booted.get("name", vm.name),
            "impostorSshd": bool(vm.lab.get("impostorSshd")),
        }


def apply_pending(vm: VM) -> None:
    for key in vm.pending_delete:
        remove_key(vm.config, key, vm.vmid)
    vm.config.update(vm.pending)
    vm.pending.clear()
    vm.pending_delete.clear()
