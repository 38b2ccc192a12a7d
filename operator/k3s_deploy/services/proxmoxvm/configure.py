"""Bring the VM's configuration to the spec: only the difference, cheaply when nothing drifted."""

from __future__ import annotations

from k3s_deploy.errors import NotYet, ProxmoxNotFound
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.proxmoxvm import plan
from k3s_deploy.services.proxmoxvm.work import PENDING_CHANGES, VM_PROVISIONED, Work


def needs_config_read(work: Work, vm: VmSummary) -> list[str]:
    """Why this pass must read the VM config; empty means the shared list proves nothing changed."""
    reasons = []
    if work.memory.config_incomplete:
        reasons.append("an earlier configure did not finish")
    if work.status.observed_generation != work.obj.generation:
        reasons.append("spec changed")
    if not work.conditions.is_true(VM_PROVISIONED):
        reasons.append("not yet configured")
    if work.status.pending_changes:
        reasons.append("pending changes")
    owner_tag = work.obj.owner_tag if work.cloned else None
    drift = plan.inventory_drift(work.spec, vm, name=work.desired_name, owner_tag=owner_tag)
    if drift:
        reasons.append("drift: " + ", ".join(drift))
    return reasons


async def configure(work: Work, vm: VmSummary, *, force: str | None = None) -> None:
    """Apply config changes (sync), then start a disk resize task if the disk must grow.

    Until the writes went through, ``memory.config_incomplete`` makes the next pass read the config
    again: the status written after a failed pass no longer says what is left to do (a write whose
    reply was lost may still land later, so the config is the only truth).

    The cloud-init drive is not rebuilt here (``PUT .../cloudinit``): a start rebuilds it anyway, and
    on a running VM a rebuilt drive would hide that the guest still runs with the old data.
    ``GET .../cloudinit`` keeps listing the changed keys until the next start; cloudinit.py acts on it.
    """
    why = needs_config_read(work, vm) + ([force] if force else [])
    if not why:
        return
    client = work.session.client
    work.memory.config_incomplete = True
    config = await work.vm_config(vm)
    owner_tag = work.obj.owner_tag if work.cloned else None
    todo = plan.plan_config(work.spec, config, name=work.desired_name, owner_tag=owner_tag)
    if todo.changes:
        work.config_changed(vm.vmid)
        try:
            await client.update_config(vm.node, vm.vmid, todo.changes)
        except Exception:
            work.memory.write_in_doubt = True  # it may land later, even after a start (cloudinit.py)
            raise
        work.changed()
        work.event(
            "Normal", "Configured", "changed " + ", ".join(sorted(todo.changes)) + f" ({'; '.join(why)})"
        )
    locked = vm.lock or config.get("lock")
    if plan.wants_cloud_init(work.spec) and not locked and not plan.has_cloud_init_drive(config):
        raise ProxmoxNotFound(
            f"VM {vm.vmid} has no cloud-init drive, so spec.cloudInit cannot reach the guest; add one "
            f"(e.g. qm set {vm.vmid} --ide2 <storage>:cloudinit) or clone from a template that has one",
            reason="NoCloudInitDrive",
        )
    work.memory.config_incomplete = False
    work.config_confirmed = True
    if todo.resize is not None:
        disk, size = todo.resize
        upid = await client.resize_disk(vm.node, vm.vmid, disk, size)
        await work.start_task("resize", vm.node, upid, f"growing {disk} to {size}")
    if vm.status == "running" and (todo.changes or work.status.pending_changes):
        pending = await client.vm_pending(vm.node, vm.vmid)
        keys = sorted(
            str(p["key"]) for p in pending if ("pending" in p or "delete" in p) and p.get("key") != "digest"
        )
        work.status.pending_changes = [k for k in keys if not plan.is_cloud_init_key(k)]
    elif vm.status != "running":
        work.status.pending_changes = []
    if work.status.pending_changes:
        work.conditions.set(
            PENDING_CHANGES,
            True,
            "RestartRequired",
            "changes wait for a restart: "
            + ", ".join(work.status.pending_changes)
            + "; set the annotation k3sdeploy.io/restart (any new value) or restartPolicy: Automatic",
        )
    else:
        work.conditions.remove(PENDING_CHANGES)
    if vm.lock:
        raise NotYet(3.0, "VMLocked", f"VM {vm.vmid} is locked ({vm.lock})")
