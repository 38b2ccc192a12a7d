"""Addresses from the QEMU guest agent, re-read only when the VM booted again or the spec changed.

The first contact of a boot is also when the cloud-init drive the guest booted from is checked (and
on later passes until that check succeeded once).
"""

from __future__ import annotations

from k3s_deploy.errors import GuestNotReady, NotYet
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.cadence import AGENT_CAP, AGENT_FRACTION, next_look
from k3s_deploy.services.proxmoxvm import plan
from k3s_deploy.services.proxmoxvm.cloudinit import ensure_fresh_cloud_init
from k3s_deploy.services.proxmoxvm.inventory import Snapshot
from k3s_deploy.services.proxmoxvm.work import AGENT_READY, BOOT_TOLERANCE, Work

AGENT_POLL = 2.0  # the first reads after boot; later ones rarer as the boot goes on (cadence.py)


def _boot_time(snapshot: Snapshot, vm: VmSummary) -> float | None:
    return snapshot.wall_time - vm.uptime if vm.uptime else None


async def ensure_addresses(work: Work, vm: VmSummary, state: str) -> None:
    if state != "running":
        work.status.addresses = []
        work.memory.boot_time = None
        work.memory.agent_wait_since = None
        work.conditions.set(AGENT_READY, False, "VMNotRunning", f"the VM is {state}")
        return
    snapshot = await work.listed()
    boot = _boot_time(snapshot, vm)
    rebooted = (
        boot is not None
        and work.memory.boot_time is not None
        and abs(boot - work.memory.boot_time) > BOOT_TOLERANCE
    )
    fresh_enough = (
        bool(work.status.addresses)
        and work.conditions.is_true(AGENT_READY)
        and not rebooted
        and work.memory.address_read_generation == work.obj.generation
        and work.memory.address_vmid == vm.vmid
    )
    if fresh_enough:
        await ensure_fresh_cloud_init(work, vm, boot)  # no call once this boot was checked
        return
    agent = work.spec.guest_agent
    cidr = agent.address_cidr if agent else None
    timeout = agent.timeout_seconds if agent else 300
    asked = work.now().timestamp()
    try:
        interfaces = await work.session.client.agent_interfaces(vm.node, vm.vmid)
        addresses = plan.usable_addresses(interfaces, cidr)
        if not addresses:
            raise GuestNotReady("the guest agent reports no usable address yet", reason="NoAddress")
    except GuestNotReady as exc:
        work.status.addresses = []
        uptime = vm.uptime or 0
        if uptime < timeout:
            work.conditions.set(AGENT_READY, False, "WaitingForAgent", f"{exc.message} (up {uptime}s)")
            if work.memory.agent_wait_since is None:  # the list's uptime may be as old as the list
                work.memory.agent_wait_since = asked - uptime
            waited = work.now().timestamp() - work.memory.agent_wait_since
            after = next_look(waited, floor=AGENT_POLL, fraction=AGENT_FRACTION, cap=AGENT_CAP)
            raise NotYet(after, "WaitingForAgent", exc.message) from exc
        work.conditions.set(
            AGENT_READY,
            False,
            "AgentNotResponding",
            f"{exc.message} after {uptime}s; check that qemu-guest-agent runs in the VM and agent: 1 is set",
        )
        return
    if addresses != work.status.addresses:
        work.event("Normal", "AddressesChanged", "guest addresses: " + ", ".join(addresses))
    work.status.addresses = addresses
    work.memory.agent_wait_since = None
    work.memory.boot_time = boot
    work.memory.address_read_generation = work.obj.generation
    work.memory.address_vmid = vm.vmid
    work.conditions.set(AGENT_READY, True, "AgentAnswering", "addresses: " + ", ".join(addresses))
    await ensure_fresh_cloud_init(work, vm, boot)  # first contact of this boot: one look at the drive
