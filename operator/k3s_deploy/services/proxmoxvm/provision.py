"""Make sure the VM exists: find it again, adopt it, or clone it (crash-safe, race-safe)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NoReturn

from k3s_deploy.api.proxmoxvm import VMSelector
from k3s_deploy.errors import InvalidSpec, K3sDeployError, NotYet, ProxmoxBusy
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.ownership import check_adoptable
from k3s_deploy.services.proxmoxvm import placement, plan
from k3s_deploy.services.proxmoxvm.inventory import Snapshot
from k3s_deploy.services.proxmoxvm.work import (
    AGENT_READY,
    ORPHAN_ANNOTATION,
    VM_PROVISIONED,
    Work,
)

VMID_ATTEMPTS = 5
PLACING_AGE = 5.0  # seconds the VM list a clone is placed by may be old


async def _find_recorded(work: Work) -> VmSummary | None:
    """The VM status.vmid names, confirmed with a fresh list before it is declared gone."""
    vmid = work.status.vmid
    if vmid is None:
        return None
    vm = (await work.listed()).by_vmid(vmid)
    if vm is None:
        vm = (await work.listed(fresh=True)).by_vmid(vmid)
    return vm


async def is_ours(work: Work, vm: VmSummary) -> bool:
    """A clone this object started: our tag on a VM with our name, or our marker in its description.

    The tag alone does not say which object: the children of one K3sCluster all carry the cluster's
    tag, so a sibling's VM found under a recorded vmid must not be taken. The marker names our uid.
    """
    if work.obj.owns(vm.tags) and work.desired_name is not None and vm.name == work.desired_name:
        return True
    config = await work.vm_config(vm)
    return work.obj.owner_marker in str(config.get("description", ""))


async def ensure_vm(work: Work) -> VmSummary:
    provisioned = work.conditions.is_true(VM_PROVISIONED)
    vm = await _find_recorded(work)
    if vm is not None:
        if vm.lock:
            _wait_unlocked(work, vm)
        # status is a cache anyone with status rights could write: the recorded VM is checked every pass
        if not work.cloned:
            check_adoptable(work.adoption, vm, work.obj.owner_tag)
            work.status.node = vm.node
            return vm
        if await is_ours(work, vm):
            work.status.node = vm.node
            return vm
        if provisioned:
            raise InvalidSpec(
                f"VM {vm.vmid} carries neither the ownership tag {work.obj.owner_tag} nor this object's "
                "marker, so it is not managed; restore the tag, or delete this object with the annotation "
                f'{ORPHAN_ANNOTATION}: "true"',
                reason="NotOwned",
            )
        work.event("Warning", "VmidTaken", f"vmid {vm.vmid} was taken by another VM; allocating another")
        work.status.vmid = None
    elif work.status.vmid is not None and provisioned:
        work.event(
            "Warning",
            "VMMissing",
            f"VM {work.status.vmid} no longer exists in Proxmox"
            + ("; cloning it again" if work.cloned else "; looking for it again"),
        )
        work.status.vmid = None
        # Whatever was learned from the old VM is gone with it: a re-made VM boots with new addresses.
        work.status.addresses = []
        work.memory.boot_time = None
        work.memory.address_vmid = None
        work.conditions.set(VM_PROVISIONED, False, "VMMissing", "the VM disappeared from Proxmox")
        work.conditions.set(AGENT_READY, False, "VMMissing", "the VM disappeared from Proxmox")
    if work.spec.source.existing is not None:
        return await _adopt(work)
    return await _clone(work)


async def _adopt(work: Work) -> VmSummary:
    selector = work.spec.source.existing
    assert selector is not None
    snap = await work.session.inventory.get(fresh=True)
    vm = plan.select_existing(snap.vms, selector, work.spec.node)
    check_adoptable(work.adoption, vm, work.obj.owner_tag)
    work.status.vmid, work.status.node, work.status.adopted = vm.vmid, vm.node, True
    work.event("Normal", "Adopted", f"adopted VM {vm.node}/{vm.vmid} ({vm.name})")
    return vm


async def _clone(work: Work) -> VmSummary:
    source = work.spec.source.clone
    assert source is not None
    session = work.session
    snap = await _placing_list(work, source.template)
    # A VM we made earlier but lost track of: status wiped, or a clone whose reply never came back
    # (Proxmox cloned, the client saw a timeout/5xx). Before configure its only mark is our marker
    # in the description, so same-name VMs without the tag are checked for it (one config read each).
    name = work.desired_name
    mine = [vm for vm in snap.vms if vm.name == name and not vm.template and await is_ours(work, vm)]
    if len(mine) == 1:
        return _reclaim(work, mine[0])
    templates = plan.select_template(snap.vms, source.template)
    template, target = await _place(work, templates, snap.vms)
    recorded = work.status.vmid
    candidate = recorded or work.spec.vmid
    for _attempt in range(VMID_ATTEMPTS):
        try:
            vmid = await _allocate(work, candidate, snap.vmids())
        except ProxmoxBusy:
            found = await _ours_at(work, recorded) if candidate == recorded else None
            if found is not None:
                return _reclaim(work, found)  # our own earlier clone appeared under the recorded id
            if work.spec.vmid is not None:
                raise InvalidSpec(
                    f"spec.vmid {work.spec.vmid} is used by another VM; choose a free id or remove spec.vmid",
                    reason="VmidInUse",
                ) from None
            candidate = None
            continue
        # Record the id before the clone starts: after a crash the next pass finds this VM, not a twin.
        work.status.vmid, work.status.node, work.status.adopted = vmid, target, False
        work.conditions.set(
            VM_PROVISIONED, False, "Cloning", f"cloning {template.name or template.vmid} to {vmid}"
        )
        await work.checkpoint()
        work.changed()  # should the reply be lost, the next pass needs a list sent after this attempt
        try:
            upid = await session.client.clone(
                template.node,
                template.vmid,
                vmid,
                name=name,
                target=target if target != template.node else None,
                full=source.full,
                storage=source.storage,
                pool=source.pool,
                description=work.obj.owner_marker,
            )
        except ProxmoxBusy as exc:
            found = await _ours_at(work, vmid) if exc.reason == "VmidTaken" else None
            if found is not None:
                return _reclaim(work, found)
            if exc.reason != "VmidTaken" or work.spec.vmid is not None:
                raise
            session.vmids.refused(vmid)  # the next attempt skips it and asks Proxmox for a new floor
            candidate = None
            continue
        work.memory.cloned_here = vmid
        await work.start_task(
            "clone", template.node, upid, f"cloning {template.node}/{template.vmid} to {target}/{vmid}"
        )
    raise ProxmoxBusy(
        f"lost the vmid race {VMID_ATTEMPTS} times in a row; retrying later", reason="VmidTaken"
    )


async def _placing_list(work: Work, template: VMSelector) -> Snapshot:
    """The list a clone is placed by: at most ``PLACING_AGE`` old, so siblings placing together share
    one read, and sent after this object's last clone attempt (its VM, should the reply have been
    lost, is in it). A template it does not show may be moments old: then a fresh read decides."""
    snap = await work.listed(max_age=PLACING_AGE)
    if not any(plan.matches(vm, template) for vm in snap.vms):
        snap = await work.listed(fresh=True)
    return snap


async def _place(work: Work, templates: list[VmSummary], vms: list[VmSummary]) -> tuple[VmSummary, str]:
    """The template copy and the node for a new clone, counting the siblings (see placement).

    Everything is read first; then, with no ``await`` in between, the siblings' nodes and the
    reservations of siblings placed in this same moment are counted and our choice is reserved.
    """
    obj = work.obj
    nodes = await work.session.inventory.nodes()  # shared by siblings placing together
    key = placement.sibling_key(obj.namespace, obj.labels)
    siblings: list[dict[str, Any]] = []
    if key is not None and work.list_siblings is not None and work.spec.node is None:
        siblings = await work.list_siblings()
    shared: dict[int, bool] = {}
    if work.spec.node is None and {n.node for n in nodes if n.status == "online"} - {
        t.node for t in templates
    }:
        shared = await _template_sharing(work, templates)
    placed = placement.sibling_nodes(siblings, {vm.vmid: vm for vm in vms}, exclude_uid=obj.uid)
    if key is not None:
        alive = {str((s.get("metadata") or {}).get("uid", "")) for s in siblings}
        placed = work.session.placements.merged(key, placed, alive)
    keep = work.status.node if work.status.vmid is not None else None
    template, choice = plan.choose_placement(
        templates, nodes, work.spec, siblings=list(placed.values()), shared=shared, keep=keep
    )
    if key is not None:
        work.session.placements.reserve(key, obj.uid, choice.node)
    if choice.shortfall is not None:
        reason, message = choice.shortfall
        work.conditions.set(placement.SPREAD, False, reason, f"placed on {choice.node}: {message}")
        work.event("Warning", reason, f"placed on {choice.node} next to a sibling: {message}")
    elif key is not None and work.spec.node is None:
        work.conditions.set(
            placement.SPREAD, True, "Placed", f"placed on {choice.node} ({work.spec.placement})"
        )
    return template, choice.node


async def _template_sharing(work: Work, templates: list[VmSummary]) -> dict[int, bool]:
    """Template vmid -> can be cloned to another node (every disk on shared storage). Unknown: True,
    and Proxmox has the last word."""
    client = work.session.client
    try:
        storages = await client.shared_storages()
        out: dict[int, bool] = {}
        for t in templates:
            used = placement.disk_storages(await client.vm_config(t.node, t.vmid))
            out[t.vmid] = all(storages.get(s, True) for s in used)
        return out
    except K3sDeployError:
        return {}  # a placement preference: without the facts, clone and let Proxmox say


def _reclaim(work: Work, vm: VmSummary) -> VmSummary:
    work.status.vmid, work.status.node, work.status.adopted = vm.vmid, vm.node, False
    work.event("Normal", "Reclaimed", f"found VM {vm.node}/{vm.vmid} that this object created earlier")
    # Its clone may still run when the status that named the task was lost (a crash between the
    # clone and the status write, a wiped or restored status): no write until the lock goes.
    if vm.lock:
        _wait_unlocked(work, vm)
    return vm


def _wait_unlocked(work: Work, vm: VmSummary) -> NoReturn:
    """Look again in a few seconds, at a list read after now: the one that showed the lock stays
    shared for ``max_age`` and would show it until then."""
    work.changed()
    raise NotYet(3.0, "VMLocked", f"VM {vm.vmid} is locked ({vm.lock})")


async def _ours_at(work: Work, vmid: int | None) -> VmSummary | None:
    """The VM now holding ``vmid`` when this object created it (a clone whose reply was lost)."""
    if vmid is None:
        return None
    vm = (await work.session.inventory.get(fresh=True)).by_vmid(vmid)
    if vm is None or vm.template or not await is_ours(work, vm):
        return None
    return vm


async def _allocate(work: Work, candidate: int | None, taken: Collection[int]) -> int:
    """A free vmid no other object of this operator is about to use; the one place ids are reserved.

    The id is reserved the moment it is chosen (no ``await`` in between): siblings whose first passes
    start together would otherwise all get the same "next free id" and all but one lose the clone.
    A candidate (the recorded id or ``spec.vmid``) is this object's own and is checked as it is; any
    other id is picked above one shared ``nextid`` answer, past the ``taken`` ids of the VM list.
    """
    if candidate is not None:
        return await work.session.vmids.check(candidate)
    return await work.session.vmids.claim(taken)
