"""Simulated worker tasks: real UPIDs, durations per task type, logs, failure rules, restart resume.

A task kind is a pair of functions registered by name: ``begin`` runs when the task is created (it
may fail the task at once, like a worker that dies early) and ``finish`` when its duration is over.
Tasks keep their absolute end time in the state, so a restarted simulator finishes them on time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from k3s_deploy_lab.pvesim.apierror import TaskFailed
from k3s_deploy_lab.pvesim.auth import Identity
from k3s_deploy_lab.pvesim.model import Task

if TYPE_CHECKING:
    from k3s_deploy_lab.pvesim.sim import Sim

Step = Callable[["Sim", Task], list[str] | None]


@dataclass(frozen=True)
class TaskKind:
    finish: Step
    begin: Step | None = None
    abort: Callable[[Sim, Task], None] | None = None


KINDS: dict[str, TaskKind] = {}


def register(
    name: str, finish: Step, begin: Step | None = None, abort: Callable[[Sim, Task], None] | None = None
) -> None:
    KINDS[name] = TaskKind(finish, begin, abort)


def make_upid(node: str, pid: int, pstart: int, starttime: int, type_: str, id_: str, user: str) -> str:
    return f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type_}:{id_}:{user}:"


def parse_upid(upid: str) -> dict[str, Any] | None:
    parts = upid.split(":")
    if len(parts) != 9 or parts[0] != "UPID" or parts[8] != "":
        return None
    try:
        return {"node": parts[1], "pid": int(parts[2], 16), "pstart": int(parts[3], 16),
                "starttime": int(parts[4], 16), "type": parts[5], "id": parts[6], "user": parts[7]}  # fmt: skip
    except ValueError:
        return None


class TaskRunner:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def start(self, node: str, type_: str, id_: str, ident: Identity, args: dict[str, Any] | None = None,
              seconds: float | None = None) -> str:  # fmt: skip
        """Create and schedule a task; returns its UPID."""
        state = self.sim.state
        now = time.time()
        state.next_pid += 1
        pid = state.next_pid
        pstart = int((now - state.nodes[node].boot_time) * 100) & 0xFFFFFFFF
        starttime = int(now)
        upid = make_upid(node, pid, pstart, starttime, type_, id_, ident.upid_user)
        duration = self.sim.task_seconds(type_) if seconds is None else seconds
        task = Task(upid=upid, node=node, pid=pid, pstart=pstart, starttime=starttime, type=type_, id=id_,
                    user=ident.user, tokenid=ident.tokenid, end_at=now + duration, args=dict(args or {}))  # fmt: skip
        state.tasks[upid] = task
        kind = KINDS[type_]
        try:
            if kind.begin:
                task.log += kind.begin(self.sim, task) or []
        except TaskFailed as exc:
            self._stop(task, str(exc))
            return upid
        self._schedule(task)
        self.sim.changed()
        return upid

    def _schedule(self, task: Task) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, task.end_at - time.time())
        self._handles[task.upid] = loop.call_later(delay, self._complete, task.upid)

    def _complete(self, upid: str) -> None:
        self._handles.pop(upid, None)
        task = self.sim.state.tasks.get(upid)
        if task is None or task.status != "running":
            return
        kind = KINDS[task.type]
        injected = self.sim.faults.task_failure(task.type, task.id, task.node)
        try:
            if injected:
                raise TaskFailed(injected)
            task.log += kind.finish(self.sim, task) or []
        except TaskFailed as exc:
            if kind.abort:
                kind.abort(self.sim, task)
            self._stop(task, str(exc))
            return
        self._stop(task, None)

    def _stop(self, task: Task, error: str | None) -> None:
        task.status = "stopped"
        task.endtime = int(time.time())
        if error is None:
            task.exitstatus = "OK"
            task.log.append("TASK OK")
        else:
            first = error.strip()
            task.exitstatus = first
            task.log.append(f"TASK ERROR: {first}")
        self.sim.changed()

    def interrupt(self, task: Task) -> None:
        """Stop a running task as `DELETE .../tasks/{upid}` does (its effects are rolled back)."""
        handle = self._handles.pop(task.upid, None)
        if handle:
            handle.cancel()
        kind = KINDS[task.type]
        if kind.abort:
            kind.abort(self.sim, task)
        self._stop(task, "interrupted by signal")

    def resume(self) -> None:
        """After a restart: schedule every task that was still running."""
        for task in list(self.sim.state.tasks.values()):
            if task.status == "running":
                self._schedule(task)

    def running_for(self, vmid: int) -> list[Task]:
        return [t for t in self.sim.state.tasks.values() if t.status == "running" and t.id == str(vmid)]
