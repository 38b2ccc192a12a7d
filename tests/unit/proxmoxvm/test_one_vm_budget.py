"""What one VM alone costs Proxmox, on a simulated clock: issue 21's run (20 s clone, 3 s start, the
guest agent 25 s after it; the agent read of a guest still booting takes PVE's 3 s guest-ping), with
the task poller and the passes scheduled by the times they ask for, as the operator's scheduler does.

The budget pins the calls of real work and of waiting apart, so a repeated read or a faster poll
shows up here, not only in the benchmark.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from k3s_deploy.ports.proxmox import GuestInterface, ProxmoxClient, TaskStatus, VmSummary
from k3s_deploy.services.cadence import next_look
from k3s_deploy.services.proxmoxvm import work as work_module
from k3s_deploy.services.proxmoxvm.inventory import Sessions
from k3s_deploy.services.proxmoxvm.taskwatch import TaskWatch

from .driver import Driver, body
from .fake import FakeConnector, FakeProxmox
from .test_reconcile import AGENT, clone_spec

DURATION = {"qmclone": 20.0, "qmstart": 3.0, "resize": 1.0}
AGENT_AFTER = 25.0  # seconds after the start task ended
AGENT_PING = 3.0  # an agent read while the agent is down waits this long
WAITING = {"node_tasks", "task_status", "agent_interfaces"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._seq), future))
        await future

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def fire_due(self) -> None:
        while self._timers and self._timers[0][0] <= self.now:
            future = heapq.heappop(self._timers)[2]
            if not future.done():  # a sleep cut short was cancelled
                future.set_result(None)


class TimedProxmox(FakeProxmox):
    """The fake, with tasks that end after their duration and a guest agent that answers after boot."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.booted_at: dict[int, float] = {}

    def _task(self, node: str, action: str, vmid: int, effect: Any = None) -> str:
        upid = super()._task(node, action, vmid, effect)
        self.started[upid] = self.clock.now
        return upid

    def settle(self) -> None:
        for upid, task in self.tasks.items():
            if not task.done and self.clock.now >= self.started[upid] + DURATION.get(task.action, 1.0):
                task.done, task.exitstatus = True, "OK"
                self.ended[upid] = self.started[upid] + DURATION.get(task.action, 1.0)
                if task.effect is not None:
                    task.effect()
                if task.action == "qmstart":
                    self.booted_at[task.vmid] = self.clock.now
        for vmid, at in self.booted_at.items():
            vm = self.vms[vmid]
            vm.uptime = max(1, int(self.clock.now - at))
            vm.agent_interfaces = AGENT if self.clock.now - at >= AGENT_AFTER else None

    async def cluster_vms(self) -> list[VmSummary]:
        self.settle()
        return await super().cluster_vms()

    async def task_status(self, node: str, upid: str) -> TaskStatus:
        self.settle()
        return await super().task_status(node, upid)

    async def agent_interfaces(self, node: str, vmid: int) -> list[GuestInterface]:
        self.settle()
        if self.vms[vmid].agent_interfaces is None:
            self.clock.now += AGENT_PING  # the read itself waits for the guest-ping to time out
        return await super().agent_interfaces(node, vmid)

    async def node_tasks(self, node: str, *, since: int, limit: int) -> list[TaskStatus]:
        """The fake's list, with each task's start and end on the simulated clock (whole seconds)."""
        self.settle()
        listed = await super().node_tasks(node, since=since, limit=limit)
        return [replace(t, starttime=self._at(t.upid), endtime=self._ended(t)) for t in listed]

    def _at(self, upid: str) -> int:
        return int(self.started[upid])

    def _ended(self, task: TaskStatus) -> int | None:
        return None if task.running else int(self.ended[task.upid])


class Lab:
    """One simulated Proxmox and one operator process (its sessions) on a simulated clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, max_age: float = 54.0) -> None:
        self.clock = clock = Clock()
        self.pve = TimedProxmox(clock)
        self.pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
        self.max_age = max_age
        self.restart()
        epoch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

        class SimulatedDatetime(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> SimulatedDatetime:
                at = epoch + dt.timedelta(seconds=clock.now)
                return cls.fromtimestamp(at.timestamp(), tz)

        monkeypatch.setattr(work_module, "dt", SimpleNamespace(datetime=SimulatedDatetime, UTC=dt.UTC))

    def restart(self) -> None:
        """A new operator process: nothing in memory, the same Proxmox."""
        clock = self.clock

        def watch(client: ProxmoxClient) -> TaskWatch:
            return TaskWatch(client, clock=lambda: clock.now, sleep=clock.sleep)

        connector = FakeConnector(self.pve)
        self.sessions = Sessions(connector, max_age=self.max_age, task_watch=watch, clock=lambda: clock.now)

    async def provision(self, name: str = "vm-a") -> float:
        """Apply one ProxmoxVM and run it to Ready as the scheduler would; the seconds it took."""
        clock, started = self.clock, self.clock.now
        uid = f"0a1b2c3d-1111-2222-3333-{sum(map(ord, name)):012d}"
        spec = clone_spec(node="pve1", resources={"cores": 4, "memoryMiB": 4096})
        drv = Driver(body(spec, name=name, uid=uid), self.pve)
        drv.sessions = self.sessions
        due: list[float] = [clock.now]

        def wake() -> None:
            due[0] = clock.now

        drv.wake = wake
        for _ in range(200):
            for _ in range(10):
                await asyncio.sleep(0)
            if due[0] <= clock.now:
                out = await drv.once()
                if (drv.condition("Ready") or {}).get("status") == "True":
                    return clock.now - started
                due[0] = clock.now + (out.requeue_after if out.requeue_after is not None else 60.0)
            for _ in range(10):  # let a poller the pass started reach its sleep
                await asyncio.sleep(0)
            timer = clock.next_timer()
            clock.now = max(clock.now, min(due[0], timer if timer is not None else due[0]))
            clock.fire_due()
        raise AssertionError(f"not Ready: {drv.condition('Reconciling')}")


async def provision_one(monkeypatch: pytest.MonkeyPatch, max_age: float = 54.0) -> tuple[Counter[str], float]:
    """Provision one VM on the simulated clock; the calls it made and when it was Ready."""
    lab = Lab(monkeypatch, max_age)
    ready_at = await lab.provision()
    return lab.pve.calls, ready_at


async def test_one_vm_alone_costs_at_most_24_calls_and_is_seen_ready_soon_after_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, ready_at = await provision_one(monkeypatch)
    work = sum(n for k, n in calls.items() if k not in WAITING and ":" not in k)
    waiting = sum(calls[k] for k in WAITING)
    # Work: list x3, nextid, clone, config read + write, start. No GET /nodes (the list carries the
    # nodes), no status/current (the start task that just succeeded says "running" where the list
    # lags), no cloud-init check (this pass wrote the config, then started the VM: the start built
    # the drive from it).
    assert calls["vm_status"] == 0 and calls["vm_config"] == 1 and calls["cluster_vms"] <= 3
    assert calls["nodes"] == 0 and calls["cloudinit_pending"] == 0
    assert work <= 8, calls
    # Waiting: 8 task-list reads for the clone and 3 for the start (24 at one a second), 5 agent reads
    # (6 at one every 2 s plus the 3 s guest-ping). 42 calls in all in session 4, 27 in session 5.
    assert calls["task_status"] == 0
    assert calls["node_tasks"] <= 11, calls
    assert calls["agent_interfaces"] <= 5, calls
    assert work + waiting <= 24
    # 20 + 3 + 25 s of waiting: the end of each is seen late by at most the cadence's share of it.
    assert ready_at <= 48.0 + 0.5 * 20 + 0.3 * 25, ready_at


def test_the_next_look_is_a_share_of_the_wait_so_far_within_floor_and_cap() -> None:
    looks, t = [], 0.0
    while t < 20.0:  # a 20 s task, looked at from its start
        t += next_look(t, floor=1.0, fraction=0.5, cap=5.0)
        looks.append(t)
    assert len(looks) == 8 and looks[:3] == [1.0, 2.0, 3.0]  # a 3 s start is seen at once, as before
    assert looks[-1] - 20.0 <= 5.0  # and the clone's end at most one cap late
    assert next_look(1000.0, floor=1.0, fraction=0.5, cap=5.0) == 5.0
