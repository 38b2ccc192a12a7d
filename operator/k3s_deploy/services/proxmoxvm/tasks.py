"""Step 0 of every pass: look at the task started by an earlier pass (never wait on it here)."""

from __future__ import annotations

from datetime import UTC, datetime

from k3s_deploy import metrics
from k3s_deploy.errors import ProxmoxBusy, ProxmoxRejected, ProxmoxTaskFailed
from k3s_deploy.services.proxmoxvm.work import Work

# Task failures that another try is likely to fix (the VM was busy), not the spec.
_TRANSIENT_EXIT = ("locked", "timeout", "got timeout", "already running", "can't lock")


async def check_task(work: Work) -> None:
    """NotYet while the task runs; clear it when done; raise if it failed."""
    ref = work.status.task_ref
    if ref is None:
        return
    node = ref.node or ref.upid.split(":")[1]
    watch = work.session.tasks
    sighting = watch.seen(ref.upid) if work.wake is not None else None
    if sighting is not None:
        task, seen_at = sighting
    else:  # not watched, or the node's list is not to be trusted now: ask the task
        seen_at = work.session.inventory.clock()
        try:
            task = await work.session.client.task_status(node, ref.upid)
        except ProxmoxRejected:
            # "no such task": the node forgot it (restart). State is re-derived from the VM itself.
            watch.forget(ref.upid)
            work.status.task_ref = None
            work.changed(seen_at)
            return
    if task.running:
        work.wait_for_task(node, ref.upid, f"waiting for the {ref.action} task {ref.upid}")
    watch.forget(ref.upid)
    work.status.task_ref = None
    work.changed(seen_at)  # the task ended before that read was sent: a list sent after it shows so
    if ref.started_at is not None:
        seconds = (datetime.now(UTC) - ref.started_at).total_seconds()
        metrics.observe_proxmox_task(_task_type(ref.upid, ref.action), max(seconds, 0.0), task.succeeded)
    if task.succeeded:
        work.finished = ref.action
        work.event(
            "Normal", ref.action.capitalize() + "Done", f"{ref.action} task finished: {task.exitstatus}"
        )
        return
    text = task.exitstatus or "unknown error"
    work.event("Warning", "TaskFailed", f"{ref.action} task failed: {text}")
    if ref.action == "clone":
        work.status.vmid = None  # Proxmox removes the half-made VM; the next pass allocates anew
    if "shrinking disks is not supported" in text:
        raise ProxmoxTaskFailed(f"resize refused by Proxmox: {text}", reason="DiskShrinkRefused")
    if any(marker in text.lower() for marker in _TRANSIENT_EXIT):
        raise ProxmoxBusy(f"{ref.action} task failed: {text}")
    raise ProxmoxTaskFailed(f"{ref.action} task failed: {text}", reason=ref.action.capitalize() + "Failed")


def _task_type(upid: str, fallback: str) -> str:
    """The task type field of a UPID (``qmclone``, ``qmstart``...), or the action when unparsable."""
    parts = upid.split(":")
    return parts[5] if len(parts) >= 9 and parts[5] else fallback
