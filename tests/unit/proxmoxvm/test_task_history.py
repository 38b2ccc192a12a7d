"""A task like one its node ran before (same type and vmid: clones of one template) is looked at near
the end its history promises, not all along the way; the history comes from the node's task list, so
a restarted operator has it too. Its first seconds stay on the cadence, and a task faster than its
history is seen at twice its duration at the latest."""

from __future__ import annotations

import asyncio

import pytest

from k3s_deploy.ports.proxmox import TaskStatus
from k3s_deploy.services.proxmoxvm.taskwatch import TaskWatch

from .test_one_vm_budget import DURATION, Clock, Lab, TimedProxmox


class Recording(TimedProxmox):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.reads: list[float] = []

    async def node_tasks(self, node: str, *, since: int, limit: int) -> list[TaskStatus]:
        self.reads.append(self.clock.now)
        return await super().node_tasks(node, since=since, limit=limit)


async def advance(clock: Clock, until: float) -> None:
    while True:
        for _ in range(20):
            await asyncio.sleep(0)
        due = clock.next_timer()
        if due is None or due > until:
            clock.now = until
            return
        clock.now = max(clock.now, due)
        clock.fire_due()


@pytest.mark.parametrize(("clone", "saved"), [(20.0, 1), (120.0, 18)])
async def test_a_second_clone_of_a_template_costs_fewer_looks_and_is_seen_as_soon(
    monkeypatch: pytest.MonkeyPatch, clone: float, saved: int
) -> None:
    monkeypatch.setitem(DURATION, "qmclone", clone)
    lab = Lab(monkeypatch)
    first = await lab.provision("vm-a")
    looks = lab.pve.calls["node_tasks"]
    lab.pve.calls.clear()
    second = await lab.provision("vm-b")
    # 20 s: looks at 1, 2, 3, 6, 12, 18, 20 (8 on the cadence); 120 s: 10 looks, not 28
    assert lab.pve.calls["node_tasks"] <= looks - saved, (looks, lab.pve.calls)
    assert second <= first + 0.5


async def test_a_restarted_operator_learns_the_history_from_the_nodes_task_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(DURATION, "qmclone", 120.0)
    lab = Lab(monkeypatch)
    await lab.provision("vm-a")
    looks = lab.pve.calls["node_tasks"]
    lab.restart()  # nothing in memory: the first read of the node asks for a day of its tasks
    lab.pve.calls.clear()
    await lab.provision("vm-b")
    assert lab.pve.calls["node_tasks"] <= looks - 18


async def test_a_clone_faster_than_its_history_is_seen_at_twice_its_duration_at_the_latest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = Lab(monkeypatch)
    first = await lab.provision("vm-a")  # a 20 s clone
    monkeypatch.setitem(DURATION, "qmclone", 8.0)  # this time the storage is quicker
    second = await lab.provision("vm-b")
    assert second <= first - 20.0 + 2 * 8.0 + 0.5
    monkeypatch.setitem(DURATION, "qmclone", 2.0)  # short ones are seen on the cadence, as before
    third = await lab.provision("vm-c")
    assert third <= first - 20.0 + 3.5


async def test_a_task_watched_during_a_long_wait_is_looked_at_within_a_second() -> None:
    clock = Clock()
    pve = Recording(clock)
    pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
    watch = TaskWatch(pve, clock=lambda: clock.now, sleep=clock.sleep)
    woken: list[str] = []
    done = await pve.clone("pve1", 9000, 100)
    watch.watch("pve1", done, lambda: woken.append("a"))
    await advance(clock, 30.0)
    assert woken == ["a"] and watch.expected(done) == 20.0
    pve.reads.clear()
    watch.watch("pve1", await pve.clone("pve1", 9000, 101), lambda: woken.append("b"))
    await advance(clock, 40.0)
    assert [r - 30.0 for r in pve.reads] == [1.0, 2.0, 3.0, 6.0]  # next at 12 s: a long sleep
    watch.watch("pve1", await pve.clone("pve1", 9000, 102), lambda: woken.append("c"))
    await advance(clock, 41.0)
    assert pve.reads[-1] == 41.0  # cut short: looked at a second after it started
    await advance(clock, 62.0)
    assert woken == ["a", "b", "c"]
