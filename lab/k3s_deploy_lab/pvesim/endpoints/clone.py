"""Clone (linked/full, local vs shared storage rules, `lock: clone`), template conversion, resize."""

from __future__ import annotations

import time
import uuid
from typing import Any

from k3s_deploy_lab.pvesim import auth
from k3s_deploy_lab.pvesim.apierror import ApiError, TaskFailed, param_error
from k3s_deploy_lab.pvesim.endpoints.cluster import vm_uses_local_storage
from k3s_deploy_lab.pvesim.endpoints.common import check_lock, skiplock
from k3s_deploy_lab.pvesim.model import VM, Task
from k3s_deploy_lab.pvesim.routing import Call, route
from k3s_deploy_lab.pvesim.sim import Sim
from k3s_deploy_lab.pvesim.tasks import register
from k3s_deploy_lab.pvesim.vmconfig import (
    DISK_RE,
    NET_RE,
    disk_size,
    disk_volume,
    disks,
    format_size,
    new_smbios_uuid,
    parse_size,
    set_disk_size,
    with_new_mac,
)

NOT_CLONED = {"template", "lock", "digest", "vmgenid", "smbios1", "name", "description"}


def _clone_begin(sim: Sim, task: Task) -> list[str]:
    src = sim.state.vms[int(task.id)]
    a = task.args
    config = {k: v for k, v in src.config.items() if k not in NOT_CLONED and not DISK_RE.match(k)}
    config = {k: with_new_mac(v) if NET_RE.match(k) else v for k, v in config.items()}
    config.update(
        {"name": a["name"], "lock": "clone", "smbios1": new_smbios_uuid(), "vmgenid": str(uuid.uuid4())}
    )
    if a.get("description"):
        config["description"] = a["description"]
    now = time.time()
    # lab knobs travel with the disk image: a clone of an impostor template is an impostor too
    vm = VM(vmid=a["newid"], node=a["target"], config=config, created_at=now, status_changed_at=now,
            instance_id=str(uuid.uuid4()), lab=dict(src.lab))  # fmt: skip
    sim.state.vms[vm.vmid] = vm
    sim.changed(guest=True)
    return [f"create {'full' if a['full'] else 'linked'} clone of drive {k} ({disk_volume(v)})"
            for k, v in sorted(disks(src.config).items()) if "cloudinit" not in v]  # fmt: skip


def _clone_finish(sim: Sim, task: Task) -> list[str]:
    a = task.args
    src = sim.state.vms.get(int(task.id))
    vm = sim.state.vms.get(a["newid"])
    if src is None or vm is None:
        raise TaskFailed("clone failed: source or target VM vanished")
    n = 0
    for key, value in sorted(disks(src.config).items()):
        volume = disk_volume(value)
        storage, _, name = volume.partition(":")
        if "cloudinit" in value:
            vm.config[key] = f"{a['storage'] or storage}:vm-{vm.vmid}-cloudinit,media=cdrom"
            continue
        options = value.split(",")[1:]
        if a["full"]:
            new = f"{a['storage'] or storage}:vm-{vm.vmid}-disk-{n}"
        else:
            new = f"{storage}:{name.split('/')[0]}/vm-{vm.vmid}-disk-{n}"
        vm.config[key] = ",".join([new, *options])
        n += 1
    vm.config.pop("lock", None)
    if a.get("pool"):
        sim.state.pools.setdefault(a["pool"], []).append(vm.vmid)
    sim.changed(guest=True)
    return []


def _clone_abort(sim: Sim, task: Task) -> None:
    vm = sim.state.vms.get(task.args["newid"])
    if vm is not None and vm.lock == "clone":
        del sim.state.vms[vm.vmid]
        sim.changed(guest=True)


register("qmclone", _clone_finish, _clone_begin, _clone_abort)


@route("POST", "/nodes/{node}/qemu/{vmid}/clone")
async def clone(call: Call) -> Any:
    sim, p = call.sim, call.params
    src = sim.vm(call.node, call.vmid)
    check_lock(src)
    newid = int(p["newid"])
    target = str(p.get("target") or call.node)
    if target != call.node:
        sim.node_check(target)
        if vm_uses_local_storage(sim, src):
            raise ApiError(500, f"can't clone VM to node '{target}' (VM uses local storage)")
    full = bool(p["full"]) if "full" in p else not src.template
    if not full:
        if not src.template:
            raise ApiError(
                500, "Linked clone feature is not supported for drive 'scsi0' (VM is not a template)"
            )
        for opt in ("storage", "format"):
            if opt in p:
                raise param_error({opt: "option is only allowed for full clones"})
    storage = p.get("storage")
    if storage is not None:
        st = sim.state.storages.get(str(storage))
        if st is None or not st.on(target):
            raise ApiError(500, f"storage '{storage}' does not exist")
    for st_id in (
        {str(storage)} if storage else {disk_volume(v).split(":")[0] for v in disks(src.config).values()}
    ):
        if not auth.has(sim.state, call.ident, f"/storage/{st_id}", ["Datastore.AllocateSpace"]):
            raise ApiError(403, f"Permission check failed (/storage/{st_id}, Datastore.AllocateSpace)")
    pool = p.get("pool")
    if pool is not None and pool not in sim.state.pools:
        raise ApiError(500, f"pool '{pool}' does not exist")
    if newid in sim.state.vms:
        raise ApiError(500, f"unable to create VM {newid}: config file already exists")
    args = {"newid": newid, "target": target, "full": full, "storage": storage, "pool": pool,
            "name": str(p.get("name") or f"Copy-of-VM-{src.name}"), "description": p.get("description")}  # fmt: skip
    return sim.tasks.start(call.node, "qmclone", str(src.vmid), call.ident, args)


def _template_finish(sim: Sim, task: Task) -> list[str]:
    vm = sim.state.vms.get(int(task.id))
    if vm is None:
        raise TaskFailed(f"Configuration file 'nodes/{task.node}/qemu-server/{task.id}.conf' does not exist")
    if vm.status == "running":
        raise TaskFailed("you can't convert a VM to template if VM is running")
    for key, value in disks(vm.config).items():
        if "cloudinit" in value:
            continue
        vm.config[key] = value.replace(f"vm-{vm.vmid}-disk-", f"base-{vm.vmid}-disk-")
    vm.config["template"] = "1"
    sim.changed(guest=True)
    return []


register("qmtemplate", _template_finish)


@route("POST", "/nodes/{node}/qemu/{vmid}/template")
async def template(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    check_lock(vm)
    if vm.template:
        raise ApiError(500, "you can't convert a template to a template")
    if vm.status == "running":
        raise ApiError(500, "you can't convert a VM to template if VM is running")
    return call.sim.tasks.start(call.node, "qmtemplate", str(vm.vmid), call.ident, {})


def _resize_finish(sim: Sim, task: Task) -> list[str]:
    vm = sim.state.vms.get(int(task.id))
    disk = task.args["disk"]
    if vm is None or disk not in vm.config:
        raise TaskFailed(f"disk '{disk}' does not exist")
    old = disk_size(vm.config[disk])
    text = task.args["size"]
    new = old + parse_size(text[1:]) if text.startswith("+") else parse_size(text)
    if new < old:
        raise TaskFailed("shrinking disks is not supported")
    vm.config[disk] = set_disk_size(vm.config[disk], new)
    sim.changed()
    return [f"  Size of logical volume changed from {format_size(old)} to {format_size(new)}."]


register("resize", _resize_finish)


@route("PUT", "/nodes/{node}/qemu/{vmid}/resize")
async def resize(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    check_lock(vm, skiplock(call))
    digest = call.params.get("digest")
    if digest and digest != vm.digest():
        raise ApiError(500, "checksum mismatch (file change by other user?)")
    args = {"disk": call.params["disk"], "size": call.params["size"]}
    return call.sim.tasks.start(call.node, "resize", str(vm.vmid), call.ident, args)
