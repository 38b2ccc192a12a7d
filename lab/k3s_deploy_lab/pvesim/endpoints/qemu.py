"""The qemu guest list, one guest's index, status/current, and destroy."""

from __future__ import annotations

from typing import Any

from k3s_deploy_lab.pvesim import auth
from k3s_deploy_lab.pvesim.apierror import ApiError, TaskFailed
from k3s_deploy_lab.pvesim.endpoints.cluster import vm_stats
from k3s_deploy_lab.pvesim.model import VM, Task
from k3s_deploy_lab.pvesim.routing import Call, route
from k3s_deploy_lab.pvesim.sim import Sim
from k3s_deploy_lab.pvesim.tasks import register


def list_entry(sim: Sim, vm: VM, full: bool = False) -> dict[str, Any]:
    stats = vm_stats(sim, vm)
    entry: dict[str, Any] = {"vmid": vm.vmid, "status": vm.status, "name": vm.name, "cpus": stats["maxcpu"]}
    entry.update({k: stats[k] for k in ("maxmem", "maxdisk", "mem", "cpu", "uptime", "netin", "netout",
                                        "diskread", "diskwrite", "disk")})  # fmt: skip
    if vm.status == "running":
        entry["pid"] = vm.pid
    if vm.template:
        entry["template"] = 1
    if vm.lock:
        entry["lock"] = vm.lock
    if vm.config.get("tags"):
        entry["tags"] = vm.config["tags"]
    if full:
        entry["qmpstatus"] = vm.qmpstatus
    return entry


@route("GET", "/nodes/{node}/qemu")
async def qemu_list(call: Call) -> Any:
    sim = call.sim
    return [list_entry(sim, vm, call.flag("full")) for vm in sim.state.vms.values()
            if vm.node == call.node and auth.has(sim.state, call.ident, f"/vms/{vm.vmid}", ["VM.Audit"])]  # fmt: skip


@route("GET", "/nodes/{node}/qemu/{vmid}")
async def vm_index(call: Call) -> Any:
    call.sim.vm(call.node, call.vmid)
    names = ["config", "pending", "status", "unlink", "vncproxy", "termproxy", "migrate", "resize", "move",
             "rrd", "rrddata", "monitor", "agent", "snapshot", "spiceproxy", "sendkey", "firewall", "mtunnel",
             "remote_migrate", "cloudinit"]  # fmt: skip
    return [{"subdir": n} for n in names]


@route("GET", "/nodes/{node}/qemu/{vmid}/status")
async def status_index(call: Call) -> Any:
    call.sim.vm(call.node, call.vmid)
    return [
        {"subdir": n}
        for n in ("current", "start", "stop", "reset", "shutdown", "suspend", "reboot", "resume")
    ]


@route("GET", "/nodes/{node}/qemu/{vmid}/status/current")
async def status_current(call: Call) -> Any:
    sim = call.sim
    vm = sim.vm(call.node, call.vmid)
    entry = list_entry(sim, vm)
    entry.update({"qmpstatus": vm.qmpstatus, "ha": {"managed": 0}, "vmid": vm.vmid})
    if sim.agent_enabled(vm):
        entry["agent"] = 1
    if vm.status == "running":
        entry.update({"running-machine": "pc-i440fx-9.2+pve1", "running-qemu": "9.2.0"})
    return entry


def _destroy_begin(sim: Sim, task: Task) -> list[str]:
    vm = sim.state.vms.get(int(task.id))
    if vm is None:
        raise TaskFailed(f"Configuration file 'nodes/{task.node}/qemu-server/{task.id}.conf' does not exist")
    if vm.lock and not task.args.get("skiplock"):
        raise TaskFailed(f"VM is locked ({vm.lock})")
    return []


def _destroy_finish(sim: Sim, task: Task) -> list[str]:
    vm = sim.state.vms.get(int(task.id))
    if vm is None:
        return []
    if vm.status == "running":
        raise TaskFailed(f"VM {vm.vmid} is running - destroy failed")
    base = f":base-{vm.vmid}-disk-"
    if vm.template and any(
        base in d for other in sim.state.vms.values() if other is not vm for d in other.config.values()
    ):
        raise TaskFailed(f"base volume 'base-{vm.vmid}-disk-0' is still in use by linked cloned")
    lines = [f"  Logical volume \"{d.split(',')[0].split(':', 1)[-1]}\" successfully removed"
             for k, d in sorted(vm.config.items()) if k[:4] in ("scsi", "virt", "sata") and ":" in d]  # fmt: skip
    del sim.state.vms[vm.vmid]
    if task.args.get("purge"):
        for members in sim.state.pools.values():
            if vm.vmid in members:
                members.remove(vm.vmid)
        sim.state.acls = [a for a in sim.state.acls if a.path != f"/vms/{vm.vmid}"]
        lines.append(f"purging VM {vm.vmid} from related configurations..")
    sim.changed(guest=True)
    return lines


register("qmdestroy", _destroy_finish, _destroy_begin)


@route("DELETE", "/nodes/{node}/qemu/{vmid}")
async def destroy(call: Call) -> Any:
    sim = call.sim
    vm = sim.vm(call.node, call.vmid)
    if vm.status == "running":
        raise ApiError(500, f"VM {vm.vmid} is running - destroy failed")
    if vm.config.get("protection") == "1":
        raise ApiError(500, f"can't remove VM {vm.vmid} - protection mode enabled")
    args = {"purge": call.flag("purge"), "skiplock": call.flag("skiplock")}
    return sim.tasks.start(call.node, "qmdestroy", str(vm.vmid), call.ident, args)
