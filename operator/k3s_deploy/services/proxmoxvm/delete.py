"""Deletion per deletionPolicy, one step per call; the handler keeps the finalizer until done.

Delete: stop, then destroy with purge. Stop: power off, keep. Retain: leave untouched. The
annotation ``k3sdeploy.io/orphan: "true"`` lets go at once whatever the policy (for a Proxmox that
will never answer again). A cloned VM is stopped or destroyed only while it still carries our
ownership tag (or, for a clone interrupted before configure, our marker in its description); an adopted
VM only while it carries the admin's adoption marker, read from Proxmox at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping

from k3s_deploy.errors import InvalidSpec, ProxmoxBusy
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.ownership import check_adoptable
from k3s_deploy.services.proxmoxvm.power import live_state
from k3s_deploy.services.proxmoxvm.provision import is_ours
from k3s_deploy.services.proxmoxvm.tasks import check_task
from k3s_deploy.services.proxmoxvm.work import DELETING, ORPHAN_ANNOTATION, POWERED_ON, Event, Work


def orphaned(annotations: Mapping[str, str]) -> bool:
    return str(annotations.get(ORPHAN_ANNOTATION, "")).lower() in ("true", "yes", "1")


def let_go(
    policy: str, vmid: int | None, node: str | None, annotations: Mapping[str, str]
) -> list[Event] | None:
    """The Events of a deletion that needs no Proxmox call (no VM recorded, deletionPolicy Retain, or the
    orphan annotation); None when Proxmox must be asked (:func:`finalize`)."""
    if vmid is None:
        return []
    if orphaned(annotations) or policy == "Retain":
        reason, why = ("Orphaned", "annotation") if orphaned(annotations) else ("Retained", "deletionPolicy")
        return [Event("Normal", reason, f"VM {node}/{vmid} left untouched ({why})")]
    return None


async def finalize(work: Work) -> bool:
    """True when the object may go; otherwise raises NotYet (task in flight) or an error."""
    policy = work.spec.effective_deletion_policy()
    events = let_go(policy, work.status.vmid, work.status.node, work.obj.annotations)
    if events is not None:
        work.events.extend(events)
        return True
    assert work.status.vmid is not None  # let_go answers for an object without a VM
    await check_task(work)
    snapshot = await work.session.inventory.get(fresh=True)
    vm = snapshot.by_vmid(work.status.vmid)
    if vm is None:
        if policy == "Delete":
            work.event("Normal", "Destroyed", f"VM {work.status.vmid} is gone")
        return True
    if vm.lock:
        raise ProxmoxBusy(f"VM {vm.vmid} is locked ({vm.lock}); waiting before deleting")
    if not work.cloned:  # the spec says adopted; status.adopted is only a cache
        try:
            check_adoptable(work.adoption, vm, work.obj.owner_tag)
        except InvalidSpec as exc:
            work.event(
                "Warning", exc.reason, f"retained, not touched under deletionPolicy {policy}: {exc.message}"
            )
            return True
    elif not await _destroyable(work, vm):
        raise InvalidSpec(
            f"VM {vm.vmid} does not carry the ownership tag {work.obj.owner_tag}, so it is not touched; "
            f'destroy it by hand or set the annotation {ORPHAN_ANNOTATION}: "true" to let go',
            reason="NotOwned",
        )
    state = await live_state(work, vm, expected="stopped")
    client = work.session.client
    work.conditions.set(DELETING, True, policy, f"deletionPolicy {policy}: VM {vm.node}/{vm.vmid}")
    if policy == "Stop":
        if state == "stopped":
            work.event("Normal", "Stopped", f"VM {vm.vmid} stopped and kept (deletionPolicy Stop)")
            return True
        upid = await client.power(
            vm.node, vm.vmid, "shutdown", shutdown_timeout=work.spec.shutdown_timeout_seconds
        )
        await work.start_task("shutdown", vm.node, upid, f"shutting down VM {vm.vmid} before release")
    if state != "stopped":
        upid = await client.power(vm.node, vm.vmid, "stop")
        await work.start_task("stop", vm.node, upid, f"stopping VM {vm.vmid} before destroying it")
    upid = await client.destroy(vm.node, vm.vmid, purge=True)
    await work.start_task("destroy", vm.node, upid, f"destroying VM {vm.vmid} with its disks")


async def _destroyable(work: Work, vm: VmSummary) -> bool:
    """Ours to destroy: it carries our tag, or it is a clone interrupted before configure tagged it.

    Once configure has run (the power step reported), a missing tag means someone removed it on purpose.
    """
    if work.obj.owns(vm.tags):
        return True
    return work.conditions.get(POWERED_ON) is None and await is_ours(work, vm)
