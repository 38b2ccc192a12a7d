"""Power actions: start, stop, shutdown, reboot, reset, suspend, resume (each a task)."""

from __future__ import annotations

import time
from typing import Any

from k3s_deploy_lab.pvesim.apierror import TaskFailed
from k3s_deploy_lab.pvesim.cloudinit import has_drive
from k3s_deploy_lab.pvesim.endpoints.common import require_running, skiplock
from k3s_deploy_lab.pvesim.model import VM, Task
from k3s_deploy_lab.pvesim.routing import Call, route
from k3s_deploy_lab.pvesim.sim import Sim
from k3s_deploy_lab.pvesim.tasks import register


def _vm(sim: Sim, task: Task) -> VM:
    vm = sim.state.vms.get(int(task.id))
    if vm is None or vm.node != task.node:
        raise TaskFailed(f"Configuration file 'nodes/{task.node}/qemu-server/{task.id}.conf' does not exist")
    return vm


def _locked(vm: VM, task: Task) -> None:
    if vm.lock and not task.args.get("skiplock"):
        raise TaskFailed(f"VM is locked ({vm.lock})")


def _start_begin(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    _locked(vm, task)
    if vm.template:
        raise TaskFailed("you can't start a vm if it's a template")
    if vm.status == "running":
        raise TaskFailed(f"VM {vm.vmid} already running")
    return ["generating cloud-init ISO"] if has_drive(vm) else []


def _start_finish(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    if vm.status == "running":
        raise TaskFailed(f"VM {vm.vmid} already running")
    sim.boot(vm)
    return []


def _stop_begin(sim: Sim, task: Task) -> list[str]:
    _locked(_vm(sim, task), task)
    return []


def _stop_finish(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    if vm.status == "running":
        sim.halt(vm)
    return []


def _shutdown_finish(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    if vm.status != "running":
        return []
    if vm.vmid in sim.faults.ignore_shutdown or vm.qmpstatus == "paused":
        if not task.args.get("forceStop"):
            raise TaskFailed("VM quit/powerdown failed - got timeout")
        sim.halt(vm)
        return ["VM quit/powerdown failed - terminating now with SIGTERM"]
    sim.halt(vm)
    return []


def _reboot_finish(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    if vm.status != "running":
        raise TaskFailed(f"VM {vm.vmid} not running")
    if vm.vmid in sim.faults.ignore_shutdown:
        raise TaskFailed("VM quit/powerdown failed - got timeout")
    sim.halt(vm)
    sim.boot(vm)
    return []


def _reset_finish(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    if vm.status != "running":
        raise TaskFailed(f"VM {vm.vmid} not running")
    vm.qmpstatus = "running"
    vm.started_at = time.time()
    sim.boot_again(vm)
    return []


def _pause_finish(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    require_running_task(vm)
    vm.qmpstatus = "paused"
    sim.changed(guest=True)
    return []


def _resume_finish(sim: Sim, task: Task) -> list[str]:
    vm = _vm(sim, task)
    require_running_task(vm)
    vm.qmpstatus = "running"
    sim.changed(guest=True)
    return []


def require_running_task(vm: VM) -> None:
    if vm.status != "running":
        raise TaskFailed(f"VM {vm.vmid} not running")


register("qmstart", _start_finish, _start_begin)
register("qmstop", _stop_finish, _stop_begin)
register("qmshutdown", _shutdown_finish, _stop_begin)
register("qmreboot", _reboot_finish, _stop_begin)
register("qmreset", _reset_finish, _stop_begin)
register("qmpause", _pause_finish, _stop_begin)
register("qmresume", _resume_finish)


def _task(call: Call, type_: str, args: dict[str, Any] | None = None, seconds: float | None = None) -> str:
    args = {"skiplock": skiplock(call), **(args or {})}
    return call.sim.tasks.start(call.node, type_, str(call.vmid), call.ident, args, seconds)


@route("POST", "/nodes/{node}/qemu/{vmid}/status/start")
async def start(call: Call) -> Any:
    call.sim.vm(call.node, call.vmid)
    return _task(call, "qmstart")


@route("POST", "/nodes/{node}/qemu/{vmid}/status/stop")
async def stop(call: Call) -> Any:
    call.sim.vm(call.node, call.vmid)
    return _task(call, "qmstop")


@route("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown")
async def shutdown(call: Call) -> Any:
    sim = call.sim
    vm = sim.vm(call.node, call.vmid)
    seconds = None
    if vm.vmid in sim.faults.ignore_shutdown and vm.status == "running":
        timeout = call.params.get("timeout")
        seconds = float(timeout) if timeout is not None else sim.seconds("shutdownTimeout")
    return _task(call, "qmshutdown", {"forceStop": call.flag("forceStop")}, seconds)


@route("POST", "/nodes/{node}/qemu/{vmid}/status/reboot")
async def reboot(call: Call) -> Any:
    require_running(call.sim.vm(call.node, call.vmid))
    return call.sim.tasks.start(call.node, "qmreboot", str(call.vmid), call.ident, {})


@route("POST", "/nodes/{node}/qemu/{vmid}/status/reset")
async def reset(call: Call) -> Any:
    require_running(call.sim.vm(call.node, call.vmid))
    return _task(call, "qmreset")


@route("POST", "/nodes/{node}/qemu/{vmid}/status/suspend")
async def suspend(call: Call) -> Any:
    require_running(call.sim.vm(call.node, call.vmid))
    return _task(call, "qmpause")


@route("POST", "/nodes/{node}/qemu/{vmid}/status/resume")
async def resume(call: Call) -> Any:
    require_running(call.sim.vm(call.node, call.vmid))
    return _task(call, "qmresume")
