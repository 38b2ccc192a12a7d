"""`config` GET / POST (async) / PUT (sync) with digest, delete and pending rules, and `pending`."""

from __future__ import annotations

from typing import Any

from k3s_deploy_lab.pvesim import auth, cloudinit
from k3s_deploy_lab.pvesim.apierror import ApiError, TaskFailed, param_error
from k3s_deploy_lab.pvesim.endpoints.common import check_lock, skiplock
from k3s_deploy_lab.pvesim.formats import split_list
from k3s_deploy_lab.pvesim.model import VM, Task
from k3s_deploy_lab.pvesim.routing import Call, route
from k3s_deploy_lab.pvesim.schema import endpoint
from k3s_deploy_lab.pvesim.sim import Sim
from k3s_deploy_lab.pvesim.tasks import register
from k3s_deploy_lab.pvesim.vmconfig import (
    NET_RE,
    ensure_mac,
    hotpluggable,
    normalize_tags,
    privilege_for,
    remove_key,
)

CONTROL = {"node", "vmid", "digest", "delete", "revert", "skiplock", "force", "background_delay"}
HIDDEN = "**********"


def typed(key: str, value: str) -> Any:
    """Config values come back typed by the schema (integers and booleans as numbers)."""
    prop = endpoint("/nodes/{node}/qemu/{vmid}/config", "POST").prop(key)
    if prop and prop.get("type") in ("integer", "boolean") and value.lstrip("-").isdigit():
        return int(value)
    if prop and prop.get("type") == "number":
        try:
            return float(value)
        except ValueError:
            return value
    return value


def render_config(vm: VM, current: bool) -> dict[str, Any]:
    conf = dict(vm.config)
    if not current:
        for key in vm.pending_delete:
            conf.pop(key, None)
        conf.update(vm.pending)
    out: dict[str, Any] = {k: typed(k, v) for k, v in sorted(conf.items())}
    if "cipassword" in out:
        out["cipassword"] = HIDDEN
    out["digest"] = vm.digest()
    return out


@route("GET", "/nodes/{node}/qemu/{vmid}/config")
async def get_config(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    return render_config(vm, call.flag("current"))


@route("GET", "/nodes/{node}/qemu/{vmid}/pending")
async def get_pending(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    out: list[dict[str, Any]] = []
    for key in sorted(set(vm.config) | set(vm.pending) | set(vm.pending_delete)):
        entry: dict[str, Any] = {"key": key}
        if key in vm.config:
            entry["value"] = HIDDEN if key == "cipassword" else typed(key, vm.config[key])
        if key in vm.pending:
            entry["pending"] = HIDDEN if key == "cipassword" else typed(key, vm.pending[key])
        if key in vm.pending_delete:
            entry["delete"] = 1
        out.append(entry)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def prepare_update(call: Call, vm: VM) -> tuple[dict[str, str], list[str]]:
    """Check an update synchronously (as PVE does before forking); returns (sets, deletes)."""
    params = call.params
    check_lock(vm, skiplock(call))
    digest = params.get("digest")
    if digest and digest != vm.digest():
        raise ApiError(500, "checksum mismatch (file change by other user?)")
    sets = {k: _text(v) for k, v in params.items() if k not in CONTROL}
    deletes = split_list(str(params.get("delete", "")))
    known = endpoint("/nodes/{node}/qemu/{vmid}/config", "POST")
    for key in deletes:
        if known.prop(key) is None or key in CONTROL:
            raise param_error({"delete": f"invalid format - invalid configuration ID '{key}'"})
        if key in sets:
            raise param_error({"delete": f"you can't use '-{key}' and '-delete {key}' at the same time"})
    if not sets and not deletes and "revert" not in params:
        raise ApiError(500, "no options specified")
    for key in [*sets, *deletes]:
        priv = privilege_for(key)
        if not auth.has(call.sim.state, call.ident, f"/vms/{vm.vmid}", [priv]):
            raise ApiError(403, f"Permission check failed (/vms/{vm.vmid}, {priv})")
    if "sshkeys" in sets:
        cloudinit.validate_sshkeys(sets["sshkeys"])
    if "cipassword" in sets:
        sets["cipassword"] = cloudinit.hash_password(sets["cipassword"])
    if "tags" in sets:
        sets["tags"] = normalize_tags(sets["tags"])
    for key in list(sets):
        if NET_RE.match(key):
            sets[key] = ensure_mac(sets[key])
    return sets, deletes


def apply_update(
    sim: Sim, vm: VM, sets: dict[str, str], deletes: list[str], revert: list[str], force: bool = False
) -> None:
    """Stopped: apply at once. Running: hot-pluggable keys now, the rest pending until the next start.
    A deleted disk is kept as ``unusedN`` unless ``force`` (vmconfig.remove_key)."""
    running = vm.status == "running"
    for key in revert:
        vm.pending.pop(key, None)
        if key in vm.pending_delete:
            vm.pending_delete.remove(key)
    for key in deletes:
        if not running or hotpluggable(key, vm.config):
            remove_key(vm.config, key, vm.vmid, force=force)
            vm.pending.pop(key, None)
        elif key not in vm.pending_delete:
            vm.pending_delete.append(key)
    for key, value in sets.items():
        if not running or hotpluggable(key, vm.config):
            vm.config[key] = value
            vm.pending.pop(key, None)
            if key in vm.pending_delete:
                vm.pending_delete.remove(key)
        else:
            vm.pending[key] = value
    sim.changed(guest=True)


def _config_finish(sim: Sim, task: Task) -> list[str]:
    vm = sim.state.vms.get(int(task.id))
    if vm is None or vm.node != task.node:
        raise TaskFailed(f"Configuration file 'nodes/{task.node}/qemu-server/{task.id}.conf' does not exist")
    if vm.lock and not task.args.get("skiplock"):
        raise TaskFailed(f"VM is locked ({vm.lock})")
    apply_update(
        sim, vm, task.args["sets"], task.args["deletes"], task.args["revert"], task.args.get("force", False)
    )
    return [f"update VM {vm.vmid}: " + " ".join(f"-{k} {'<hidden>' if k in ('cipassword', 'sshkeys') else v}"
                                                 for k, v in task.args["sets"].items())]  # fmt: skip


register("qmconfig", _config_finish)


@route("POST", "/nodes/{node}/qemu/{vmid}/config")
async def post_config(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    sets, deletes = prepare_update(call, vm)
    revert = split_list(str(call.params.get("revert", "")))
    args = {"sets": sets, "deletes": deletes, "revert": revert, "skiplock": call.flag("skiplock"),
            "force": call.flag("force")}  # fmt: skip
    return call.sim.tasks.start(call.node, "qmconfig", str(vm.vmid), call.ident, args)


@route("PUT", "/nodes/{node}/qemu/{vmid}/config")
async def put_config(call: Call) -> Any:
    vm = call.sim.vm(call.node, call.vmid)
    sets, deletes = prepare_update(call, vm)
    revert = split_list(str(call.params.get("revert", "")))
    apply_update(call.sim, vm, sets, deletes, revert, call.flag("force"))
    return None
