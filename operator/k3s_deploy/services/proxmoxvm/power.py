"""Power the VM as the spec says; restart on request; report PoweredOn."""

from __future__ import annotations

from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.proxmoxvm.work import (
    PENDING_CHANGES,
    POWERED_ON,
    RESTART_ANNOTATION,
    RESTART_HANDLED_ANNOTATION,
    Work,
)


async def live_state(work: Work, vm: VmSummary, *, expected: str) -> str:
    """The list's status lags up to 10 s: confirm with status/current only when it disagrees, once
    per list read (passes reuse one list until it is read again: the answer holds as long). A task
    this pass found succeeded is that confirmation already: PVE ends a start once QEMU runs, and a
    clone (or the resize of one) leaves the new VM stopped."""
    if vm.status == expected:
        return vm.status
    confirmed = work.memory.live_state
    if confirmed is not None and confirmed[0] is vm:
        return confirmed[1]
    if expected == "running" and work.finished in ("start", "resume"):
        state = "running"
    elif vm.status == "stopped" and work.finished in ("clone", "resize"):
        state = "stopped"  # a fresh clone nobody started yet (a start would say "already running")
    else:
        state = await work.session.client.vm_status(vm.node, vm.vmid)
    work.memory.live_state = (vm, state)
    return state


async def ensure_power(work: Work, vm: VmSummary) -> str:
    """Start, shut down or restart; returns the observed state (running, stopped, paused)."""
    client = work.session.client
    want_running = work.spec.power_state == "Running"
    state = await live_state(work, vm, expected="running" if want_running else "stopped")
    work.status.power_state = {"running": "Running", "stopped": "Stopped", "paused": "Paused"}.get(
        state, "Unknown"
    )
    restart_request = work.obj.annotations.get(RESTART_ANNOTATION)
    restart_pending = bool(restart_request) and restart_request != work.obj.annotations.get(
        RESTART_HANDLED_ANNOTATION
    )
    if want_running and state == "stopped":
        if restart_pending:
            work.annotations[RESTART_HANDLED_ANNOTATION] = restart_request or ""
        work.conditions.set(POWERED_ON, False, "Starting", "starting the VM")
        # The start builds the cloud-init drive from the config this pass read and wrote: its first
        # boot needs no check of the drive (cloudinit.py) when no earlier write may land later, i.e.
        # this process made the VM (no write of an earlier process) and none of its writes failed.
        memory = work.memory
        confirmed = work.config_confirmed and not memory.write_in_doubt and memory.cloned_here == vm.vmid
        memory.cloud_init_started = work.obj.generation if confirmed else None
        upid = await client.power(vm.node, vm.vmid, "start")
        await work.start_task("start", vm.node, upid, f"starting VM {vm.vmid}")
    if want_running and state == "paused":
        work.conditions.set(POWERED_ON, False, "Paused", "resuming the paused VM")
        upid = await client.power(vm.node, vm.vmid, "resume")
        await work.start_task("resume", vm.node, upid, f"resuming VM {vm.vmid}")
    if not want_running and state in ("running", "paused"):
        work.conditions.set(POWERED_ON, True, "ShuttingDown", "shutting the VM down")
        upid = await client.power(
            vm.node, vm.vmid, "shutdown", shutdown_timeout=work.spec.shutdown_timeout_seconds
        )
        await work.start_task(
            "shutdown",
            vm.node,
            upid,
            f"shutting down VM {vm.vmid} (hard stop after {work.spec.shutdown_timeout_seconds}s)",
        )
    if state == "running":
        automatic = work.spec.restart_policy == "Automatic" and work.conditions.is_true(PENDING_CHANGES)
        if restart_pending or automatic:
            if restart_pending:
                work.annotations[RESTART_HANDLED_ANNOTATION] = restart_request or ""
            why = "restart requested by annotation" if restart_pending else "pending changes (restartPolicy)"
            work.status.pending_changes = []
            work.conditions.remove(PENDING_CHANGES)  # a reboot applies pending changes
            # a new boot: read the agent and check the cloud-init drive again, however soon it comes
            work.memory.address_read_generation = None
            work.memory.cloud_init_generation = None
            upid = await client.power(vm.node, vm.vmid, "reboot")
            await work.start_task("reboot", vm.node, upid, f"rebooting VM {vm.vmid}: {why}")
        work.conditions.set(POWERED_ON, True, "Running", "the VM is running")
    else:
        if restart_pending:
            work.annotations[RESTART_HANDLED_ANNOTATION] = restart_request or ""
        work.conditions.set(
            POWERED_ON, False, "Stopped" if state == "stopped" else "Unknown", f"the VM is {state}"
        )
    return state
