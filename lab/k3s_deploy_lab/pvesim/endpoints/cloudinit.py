"""Cloud-init: regenerate the drive (PUT), list drive vs. config (GET), dump user/network/meta."""

from __future__ import annotations

from typing import Any

from k3s_deploy_lab.pvesim import cloudinit
from k3s_deploy_lab.pvesim.endpoints.common import check_lock
from k3s_deploy_lab.pvesim.routing import Call, route


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit")
async def get_cloudinit(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    drive = vm.ci_drive or {}
    current = {k: v for k, v in cloudinit.boot_snapshot(vm).items() if not k.startswith("_") and k != "name"}
    out: list[dict[str, Any]] = []
    for key in sorted(set(current) | {k for k in drive if not k.startswith("_") and k != "name"}):
        entry: dict[str, Any] = {"key": key}
        if key in drive:
            entry["value"] = "**********" if key == "cipassword" else drive[key]
        if key not in current:
            entry["delete"] = 1
        elif drive.get(key) != current[key]:
            entry["pending"] = "**********" if key == "cipassword" else current[key]
        out.append(entry)
    return out


@route("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit")
async def put_cloudinit(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    check_lock(vm)
    vm.ci_drive = cloudinit.boot_snapshot(vm)
    call.sim.changed()
    return None


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump")
async def dump(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    kind = call.params["type"]
    if kind == "user":
        return cloudinit.user_data(vm)
    if kind == "network":
        return cloudinit.network_data(vm)
    return cloudinit.meta_data(vm)
