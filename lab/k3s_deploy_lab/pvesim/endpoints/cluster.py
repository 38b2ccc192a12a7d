"""Cluster-wide and node views: resources, nextid, status, nodes, node status, storages."""

from __future__ import annotations

import time
from typing import Any

from k3s_deploy_lab.pvesim import auth
from k3s_deploy_lab.pvesim.apierror import ApiError, param_error
from k3s_deploy_lab.pvesim.model import VM, Node, Storage
from k3s_deploy_lab.pvesim.routing import Call, route
from k3s_deploy_lab.pvesim.sim import Sim
from k3s_deploy_lab.pvesim.vmconfig import disk_size, disks, storages_used


def vm_stats(sim: Sim, vm: VM) -> dict[str, Any]:
    """The numbers the qemu list, status/current and /cluster/resources share."""
    conf = vm.config
    memory = int(conf.get("memory", "512").split(",")[0].split("=")[-1]) * 1024**2
    cpus = int(conf.get("cores", "1")) * int(conf.get("sockets", "1"))
    boot = next(iter(d for d in disks(conf).values() if "cloudinit" not in d), "")
    running = vm.status == "running"
    uptime = int(time.time() - vm.started_at) if running and vm.started_at else 0
    return {
        "maxcpu": cpus, "cpu": 0.013 if running else 0, "maxmem": memory, "mem": memory * 2 // 5 if running else 0,
        "maxdisk": disk_size(boot) if boot else 0, "disk": 0, "netin": uptime * 1200, "netout": uptime * 800,
        "diskread": uptime * 4096, "diskwrite": uptime * 2048, "uptime": uptime,
    }  # fmt: skip


def resource_status(sim: Sim, vm: VM) -> str:
    """/cluster/resources lags behind power changes; a brand-new VM is 'unknown'."""
    if not sim.state.nodes[vm.node].online:
        return "unknown"
    if time.time() - vm.status_changed_at < sim.seconds("resourcesStatusLag"):
        return vm.prev_status
    return vm.status


def vm_resource(sim: Sim, vm: VM) -> dict[str, Any]:
    status = resource_status(sim, vm)
    entry: dict[str, Any] = {"id": f"qemu/{vm.vmid}", "vmid": vm.vmid, "node": vm.node, "type": "qemu",
                             "status": status, "name": vm.name, "template": 1 if vm.template else 0}  # fmt: skip
    if status != "unknown":
        entry.update(vm_stats(sim, vm))
        if status != "running":
            entry["uptime"] = 0
    pool = sim.state.vm_pool(vm.vmid)
    if pool:
        entry["pool"] = pool
    if vm.lock:
        entry["lock"] = vm.lock
    if vm.config.get("tags"):
        entry["tags"] = vm.config["tags"]
    return entry


def node_entry(sim: Sim, node: Node) -> dict[str, Any]:
    base: dict[str, Any] = {"node": node.name, "id": f"node/{node.name}", "type": "node"}
    if not node.online:
        return base | {"status": "offline"}
    used = sum(vm_stats(sim, vm)["mem"] for vm in sim.state.vms.values() if vm.node == node.name)
    return base | {
        "status": "online", "cpu": 0.04, "maxcpu": node.cpus, "mem": 4 * 1024**3 + used, "maxmem": node.memory,
        "disk": 12 * 1024**3, "maxdisk": 100 * 1024**3, "uptime": int(time.time() - node.boot_time), "level": "",
        "ssl_fingerprint": "AA:" * 31 + "AA",
    }  # fmt: skip


def storage_usage(sim: Sim) -> dict[tuple[str, str], int]:
    """Bytes used per (storage, node) in one pass over the guests; shared storages under node ''."""
    usage: dict[tuple[str, str], int] = {}
    for vm in sim.state.vms.values():
        for value in disks(vm.config).values():
            st = sim.state.storages.get(value.split(":", 1)[0])
            if st is not None:
                key = (st.id, "" if st.shared else vm.node)
                usage[key] = usage.get(key, 0) + disk_size(value)
    return usage


def storage_entry(storage: Storage, node: str, usage: dict[tuple[str, str], int]) -> dict[str, Any]:
    used = usage.get((storage.id, "" if storage.shared else node), 0)
    return {"storage": storage.id, "type": storage.type, "content": storage.content, "active": 1, "enabled": 1,
            "shared": 1 if storage.shared else 0, "total": storage.total, "used": used,
            "avail": storage.total - used, "used_fraction": used / storage.total if storage.total else 0}  # fmt: skip


def can_see_storage(sim: Sim, call: Call, storage: str) -> bool:
    return auth.has(sim.state, call.ident, f"/storage/{storage}", ["Datastore.Audit", "Datastore.AllocateSpace"],
                    any_of=True)  # fmt: skip


@route("GET", "/cluster/resources")
async def resources(call: Call) -> Any:
    sim, kind = call.sim, call.params.get("type")
    out: list[dict[str, Any]] = []
    if kind in (None, "vm"):
        out += [vm_resource(sim, vm) for vm in sim.state.vms.values()
                if auth.has(sim.state, call.ident, f"/vms/{vm.vmid}", ["VM.Audit"])]  # fmt: skip
    if kind in (None, "node"):
        out += [node_entry(sim, n) for n in sim.state.nodes.values()
                if auth.has(sim.state, call.ident, f"/nodes/{n.name}", ["Sys.Audit"])]  # fmt: skip
    if kind in (None, "storage"):
        usage = storage_usage(sim)
        for node in sim.state.nodes.values():
            for st in sim.state.storages.values():
                if st.on(node.name) and can_see_storage(sim, call, st.id):
                    e = storage_entry(st, node.name, usage)
                    out.append({"id": f"storage/{node.name}/{st.id}", "type": "storage", "node": node.name,
                                "storage": st.id, "status": "available" if node.online else "unknown",
                                "plugintype": st.type, "shared": e["shared"], "content": st.content,
                                "disk": e["used"], "maxdisk": st.total})  # fmt: skip
    return out


@route("GET", "/cluster/nextid")
async def nextid(call: Call) -> Any:
    vms = call.sim.state.vms
    if "vmid" in call.params:
        vmid = int(call.params["vmid"])
        if vmid in vms:
            raise param_error({"vmid": f"VM {vmid} already exists"})
        return str(vmid)
    vmid = 100
    while vmid in vms:
        vmid += 1
    return str(vmid)


@route("GET", "/cluster/status")
async def cluster_status(call: Call) -> Any:
    nodes = list(call.sim.state.nodes.values())
    out: list[dict[str, Any]] = [{"type": "cluster", "id": "cluster", "name": "lab", "nodes": len(nodes),
                                  "quorate": 1, "version": len(nodes) + 2}]  # fmt: skip
    for idx, n in enumerate(nodes, start=1):
        out.append({"type": "node", "id": f"node/{n.name}", "name": n.name, "nodeid": idx, "ip": f"127.0.0.{idx}",
                    "online": 1 if n.online else 0, "local": 1 if idx == 1 else 0, "level": ""})  # fmt: skip
    return out


@route("GET", "/nodes")
async def nodes(call: Call) -> Any:
    return [node_entry(call.sim, n) for n in call.sim.state.nodes.values()]


@route("GET", "/nodes/{node}/status")
async def node_status(call: Call) -> Any:
    node = call.sim.state.nodes[call.node]
    e = node_entry(call.sim, node)
    return {
        "uptime": e["uptime"], "cpu": e["cpu"], "wait": 0, "idle": 0,
        "loadavg": ["0.12", "0.10", "0.08"], "kversion": "Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC",
        "pveversion": "pve-manager/9.1.2/5d6b2a7e1f0c3b88",
        "cpuinfo": {"cpus": node.cpus, "cores": node.cpus, "sockets": 1, "model": "Simulated CPU", "mhz": "2400"},
        "memory": {"total": node.memory, "used": e["mem"], "free": node.memory - e["mem"]},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": e["maxdisk"], "used": e["disk"], "avail": e["maxdisk"] - e["disk"], "free": e["maxdisk"] - e["disk"]},
        "boot-info": {"mode": "efi", "secureboot": 0}, "current-kernel": {"sysname": "Linux", "release": "6.14.8-2-pve"},
    }  # fmt: skip


@route("GET", "/nodes/{node}/storage")
async def node_storage(call: Call) -> Any:
    sim, p = call.sim, call.params
    out = []
    usage = storage_usage(sim)
    for st in sim.state.storages.values():
        if not st.on(call.node) or not can_see_storage(sim, call, st.id):
            continue
        if "storage" in p and p["storage"] != st.id:
            continue
        if "content" in p and not set(str(p["content"]).split(",")) & set(st.content.split(",")):
            continue
        if "target" in p and not (st.shared or str(p["target"]) == call.node):
            continue
        out.append(storage_entry(st, call.node, usage))
    return out


@route("GET", "/nodes/{node}/storage/{storage}/status")
async def storage_status(call: Call) -> Any:
    st = call.sim.state.storages.get(str(call.params["storage"]))
    if st is None or not st.on(call.node):
        raise ApiError(500, f"storage '{call.params['storage']}' does not exist")
    return storage_entry(st, call.node, storage_usage(call.sim))


def vm_uses_local_storage(sim: Sim, vm: VM) -> bool:
    return any(
        not (sim.state.storages.get(s) and sim.state.storages[s].shared) for s in storages_used(vm.config)
    )
