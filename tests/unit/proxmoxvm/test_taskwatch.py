"""In-flight tasks watched per node: one task-list read per node and poll interval, whatever N.

The poller's sleep is a ticker the test advances, so "per interval" is exact, not timing-dependent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from k3s_deploy.errors import ProxmoxUnavailable
from k3s_deploy.ports.proxmox import ProxmoxClient
from k3s_deploy.services.proxmoxvm.inventory import Sessions
from k3s_deploy.services.proxmoxvm.taskwatch import TaskWatch, upid_starttime

from .driver import Driver, body
from .fake import FakeConnector, FakeProxmox
from .test_reconcile import clone_spec, pve_with_template

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7nD5m7m1f0yb0l0ZKk7xq3Jv6e3yq2mQ3Yc9f0Xl0a other@host"


class Ticker:
    """Stands in for asyncio.sleep: sleepers wait until the test calls :meth:`tick`."""

    def __init__(self) -> None:
        self.sleepers: list[asyncio.Future[None]] = []

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append(future)
        await future

    async def tick(self) -> None:
        for _ in range(10):  # let new pollers reach their sleep
            await asyncio.sleep(0)
        sleepers, self.sleepers = self.sleepers, []
        for future in sleepers:
            future.set_result(None)
        for _ in range(10):  # let the pollers read and settle
            await asyncio.sleep(0)


def objects(
    pve: FakeProxmox, n: int, ticker: Ticker, *, spec: dict[str, Any] | None = None, max_age: float = 0.0
) -> tuple[list[Driver], list[int]]:
    """N objects of one credential whose task poller sleeps on the ticker; the indexes woken."""

    def watch(client: ProxmoxClient) -> TaskWatch:
        return TaskWatch(client, sleep=ticker.sleep)

    sessions = Sessions(FakeConnector(pve), max_age=max_age, task_watch=watch)
    woken: list[int] = []
    drivers = []
    for i in range(n):
        uid = f"00000000-0000-0000-0000-{i:012d}"
        drv = Driver(body(spec or clone_spec(), name=f"vm-{i}", uid=uid), pve)
        drv.sessions = sessions
        drv.wake = lambda i=i: woken.append(i)
        drivers.append(drv)
    return drivers, woken


@pytest.mark.parametrize("n", [1, 10, 50])
async def test_n_tasks_in_flight_on_one_node_cost_one_list_read_per_interval(n: int) -> None:
    pve = pve_with_template()
    ticker = Ticker()
    drivers, woken = objects(pve, n, ticker)
    for drv in drivers:
        out = await drv.once()
        assert drv.obj["status"]["taskRef"]["action"] == "clone"
        assert out.requeue_after is not None and out.requeue_after >= 30  # the wake comes first
    for interval in range(1, 4):
        await ticker.tick()
        assert pve.calls["node_tasks"] == interval  # one read per interval for all n tasks
    assert pve.calls["task_status"] == 0 and woken == []
    pve.finish_tasks()
    await ticker.tick()
    assert pve.calls["node_tasks"] == 4 and sorted(woken) == list(range(n))
    for drv in drivers:  # the woken passes take the result the list gave: no read of their own
        await drv.once()
        assert drv.outcomes[-1].error is None
    assert pve.calls["task_status"] == 0
    assert all(drv.obj["status"]["taskRef"]["action"] == "resize" for drv in drivers)  # diskGiB: grow
    await ticker.tick()  # the resize tasks are watched the same way
    assert pve.calls["node_tasks"] == 5 and pve.calls["task_status"] == 0


async def test_the_poller_stops_when_nothing_is_watched() -> None:
    pve = pve_with_template()
    ticker = Ticker()
    (drv,), woken = objects(pve, 1, ticker)
    await drv.once()
    pve.finish_tasks()
    await ticker.tick()
    assert woken == [0]
    await ticker.tick()
    await ticker.tick()
    assert pve.calls["node_tasks"] == 1 and ticker.sleepers == []


async def test_a_task_the_list_does_not_show_is_read_by_its_own_pass() -> None:
    pve = pve_with_template()
    ticker = Ticker()
    (drv,), woken = objects(pve, 1, ticker)
    await drv.once()
    upid = drv.obj["status"]["taskRef"]["upid"]
    del pve.tasks[upid]  # the node forgot it (a restart): the list no longer shows it
    await ticker.tick()
    assert woken == [0]
    await drv.once()
    assert pve.calls["task_status"] == 1  # "no such task": the pass re-derives state from the VM
    assert drv.obj["status"]["taskRef"] is None or drv.obj["status"]["taskRef"]["upid"] != upid


async def test_while_the_list_fails_a_waiting_pass_reads_its_task_itself() -> None:
    pve = pve_with_template()
    ticker = Ticker()
    (drv,), woken = objects(pve, 1, ticker)
    await drv.once()
    pve.fail["node_tasks"] = ProxmoxUnavailable("595 No route to host")
    await ticker.tick()
    assert woken == []
    await drv.once()  # the fallback look (no wake came): the list is not trusted now
    assert pve.calls["task_status"] == 1 and drv.obj["status"]["taskRef"]["action"] == "clone"
    pve.finish_tasks()
    await ticker.tick()  # the poller backs off, then reads again and wakes
    await ticker.tick()
    assert woken == [0]


def test_upid_start_time() -> None:
    assert upid_starttime("UPID:pve1:0000ABCD:00000001:66A1B2C3:qmclone:9000:root@pam!op:") == 0x66A1B2C3
    assert upid_starttime("not-a-upid") == 0


async def test_a_pass_run_again_before_any_list_read_waits_for_the_next_read_without_a_call() -> None:
    """Run again right after it started a task (its own status write, a spec change): no list read has
    shown the task yet, and the node's next one is due within a second, so the pass asks nothing and
    waits; that read shows the end and wakes it, and it goes on."""
    pve = pve_with_template()
    ticker = Ticker()
    (drv,), woken = objects(pve, 1, ticker)
    await drv.once()
    pve.finish_tasks()  # ended before any list read
    out = await drv.once()
    assert out.requeue_after is not None and drv.obj["status"]["taskRef"]["action"] == "clone"
    assert pve.calls["task_status"] == 0 and pve.calls["node_tasks"] == 0
    await ticker.tick()
    assert woken == [0] and pve.calls["node_tasks"] == 1
    await drv.once()
    assert pve.calls["task_status"] == 0
    assert drv.obj["status"]["taskRef"]["action"] == "resize"  # the pass went on past the clone


async def test_a_spec_change_that_lands_while_a_task_runs_is_applied_after_it() -> None:
    """The pass that sees the new generation ends at the running task, yet the status it writes says
    the generation was observed: the next pass must still apply the new spec."""
    pve = pve_with_template()
    drv = Driver(body(clone_spec(powerState="Running")), pve)
    for _ in range(2):  # clone, resize
        await drv.once()
        pve.finish_tasks()
    await drv.once()
    assert drv.obj["status"]["taskRef"]["action"] == "start"  # in flight
    writes = pve.calls["update_config"]
    # a cloud-init key: nothing the shared VM list shows would reveal it later
    drv.bump(cloudInit={"user": "k3s", "sshAuthorizedKeys": [OTHER_KEY], "ipConfig": {"dhcp": True}})
    await drv.once()  # ends at the running start task
    assert drv.obj["status"]["observedGeneration"] == 2 and pve.calls["update_config"] == writes
    pve.finish_tasks()
    await drv.once()
    assert pve.calls["update_config"] == writes + 1
    assert OTHER_KEY in {**pve.vms[100].config, **pve.vms[100].pending}["sshkeys"]
