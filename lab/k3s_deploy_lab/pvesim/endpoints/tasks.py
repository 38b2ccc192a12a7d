"""Task list, status and log; a token sees only its own tasks unless it has Sys.Audit on the node."""

from __future__ import annotations

import re
from typing import Any

from k3s_deploy_lab.pvesim import auth
from k3s_deploy_lab.pvesim.apierror import ApiError, param_error
from k3s_deploy_lab.pvesim.formats import split_list
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


def _status_type(status: str | None) -> str:
    """PVE's normalised status type of a listed task (a running one has no status yet: unknown)."""
    if not status or status == "unexpected status":
        return "unknown"
    if status == "OK":
        return "ok"
    return "warning" if re.fullmatch(r"WARNINGS: \d+", status) else "error"


def _listed(task: Task) -> dict[str, Any]:
    """A task as the list shows it: ``status`` is RUNNING, or the exit status once it ended (with
    ``endtime``); the list has no ``exitstatus`` key (that is the per-task status endpoint's)."""
    entry = {k: v for k, v in status_of(task).items() if k != "exitstatus"}
    if task.status == "running":
        entry["status"] = "RUNNING"
    else:
        entry["status"] = task.exitstatus
        entry["endtime"] = task.endtime
    return entry


@route("GET", "/nodes/{node}/tasks")
async def task_list(call: Call) -> Any:
    """As PVE's node_tasks: with ``source=active|all`` the running tasks first (newest first), then,
    unless ``active``, the finished ones newest first; every filter (``since``/``until`` on the start
    time) applies to both; ``total`` counts every match, ``start``/``limit`` (default 50) page."""
    p = call.params
    source = p.get("source", "archive")
    types = {"ok", "warning", "error", "unknown"}
    if "statusfilter" in p and not p.get("errors"):
        types = {t.lower() for t in split_list(str(p["statusfilter"]))}
    elif p.get("errors"):
        types.discard("ok")

    def wanted(task: Task) -> bool:
        return not (
            task.node != call.node
            or ("userfilter" in p and str(p["userfilter"]).lower() not in _owner(task).lower())
            or not _may_see(call, task)
            or ("typefilter" in p and task.type != p["typefilter"])
            or ("vmid" in p and task.id != str(p["vmid"]))
            or ("since" in p and task.starttime < int(p["since"]))
            or ("until" in p and task.starttime > int(p["until"]))
            or _status_type(task.exitstatus) not in types
        )

    newest = sorted(call.sim.state.tasks.values(), key=lambda t: (t.starttime, t.pid), reverse=True)
    active = [t for t in newest if t.status == "running"] if source in ("active", "all") else []
    archive = (
        []
        if source == "active"
        else sorted((t for t in newest if t.status != "running"), key=lambda t: t.endtime or 0, reverse=True)
    )
    matches = [_listed(t) for t in (*active, *archive) if wanted(t)]
    start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
    return WithTotal(matches[start : start + limit], len(matches))


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
