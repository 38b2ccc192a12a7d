"""Task list, status and log; a token sees only its own tasks unless it has Sys.Audit on the node."""

from __future__ import annotations

from typing import Any

from k3s_deploy_lab.pvesim import auth
from k3s_deploy_lab.pvesim.apierror import ApiError, param_error
from k3s_deploy_lab.pvesim.model import Task
from k3s_deploy_lab.pvesim.routing import Call, WithTotal, route
from k3s_deploy_lab.pvesim.tasks import parse_upid


def _owner(task: Task) -> str:
    return task.tokenid or task.user


def _may_see(call: Call, task: Task) -> bool:
    return call.ident.upid_user == _owner(task) or auth.has(
        call.sim.state, call.ident, f"/nodes/{task.node}", ["Sys.Audit"]
    )


def _task(call: Call) -> Task:
    upid = str(call.params["upid"])
    if parse_upid(upid) is None:
        raise param_error({"upid": "unable to parse worker upid"})
    task = call.sim.state.tasks.get(upid)
    if task is None or task.node != call.node:
        raise param_error({"upid": "no such task"})
    if not _may_see(call, task):
        raise ApiError(403, f"Permission check failed (/nodes/{call.node}, Sys.Audit)")
    return task


def status_of(task: Task) -> dict[str, Any]:
    out: dict[str, Any] = {"upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
                           "starttime": task.starttime, "type": task.type, "id": task.id, "user": task.user,
                           "status": task.status}  # fmt: skip
    if task.tokenid:
        out["tokenid"] = task.tokenid.split("!", 1)[1]
    if task.status == "stopped":
        out["exitstatus"] = task.exitstatus
    return out


@route("GET", "/nodes/{node}/tasks")
async def task_list(call: Call) -> Any:
    p = call.params
    source = p.get("source", "archive")
    out = []
    for task in sorted(call.sim.state.tasks.values(), key=lambda t: t.starttime, reverse=True):
        if task.node != call.node or not _may_see(call, task):
            continue
        if (source == "active" and task.status != "running") or (
            source == "archive" and task.status == "running"
        ):
            continue
        if "vmid" in p and task.id != str(p["vmid"]):
            continue
        if "typefilter" in p and task.type != p["typefilter"]:
            continue
        if "userfilter" in p and str(p["userfilter"]) not in _owner(task):
            continue
        if p.get("errors") and task.exitstatus in (None, "OK"):
            continue
        entry = status_of(task)
        if task.endtime:
            entry["endtime"] = task.endtime
            entry["status"] = task.exitstatus
        out.append(entry)
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    return WithTotal(out[start : start + limit], len(out))


@route("GET", "/nodes/{node}/tasks/{upid}")
async def task_index(call: Call) -> Any:
    _task(call)
    return [{"name": "log"}, {"name": "status"}]


@route("GET", "/nodes/{node}/tasks/{upid}/status")
async def task_status(call: Call) -> Any:
    return status_of(_task(call))


@route("GET", "/nodes/{node}/tasks/{upid}/log")
async def task_log(call: Call) -> Any:
    task = _task(call)
    start, limit = int(call.params.get("start", 0)), int(call.params.get("limit", 50))
    lines = task.log if task.log else ["no content"]
    page = [{"n": i + 1, "t": t} for i, t in enumerate(lines)][start : start + limit if limit else None]
    return WithTotal(page, len(lines))


@route("DELETE", "/nodes/{node}/tasks/{upid}")
async def task_stop(call: Call) -> Any:
    task = _task(call)
    if task.status == "running":
        call.sim.tasks.interrupt(task)
    return None
