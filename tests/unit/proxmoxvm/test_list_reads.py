"""The shared VM list (``/cluster/resources``) at N siblings: a task's end needs a list read sent after
it, for that object only. The objects one task-list read woke share one list read; their ends no
longer make everyone read (at N=200, 177 list reads, about one per task end)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from k3s_deploy.errors import ProxmoxUnavailable
from k3s_deploy.services.proxmoxvm.inventory import Inventory

from .driver import Driver, body
from .fake import FakeProxmox
from .test_cloudinit_own_start import no_resize
from .test_reconcile import AGENT, pve_with_template
from .test_taskwatch import Ticker, objects


def siblings(pve: FakeProxmox, n: int, ticker: Ticker) -> tuple[list[Driver], list[int]]:
    return objects(pve, n, ticker, spec=no_resize(), max_age=54.0)  # as the operator: 0.9 x resync


@pytest.mark.parametrize("n", [1, 10, 50])
async def test_the_ends_one_task_list_read_shows_cost_one_list_read_whatever_n(n: int) -> None:
    pve = pve_with_template()
    ticker = Ticker()
    drivers, woken = siblings(pve, n, ticker)
    await asyncio.gather(*(d.once() for d in drivers))  # N clones, placed by one list read
    assert pve.calls["clone"] == n and pve.calls["cluster_vms"] == 1
    for step in ("clone", "start"):
        pve.finish_tasks()
        woken.clear()
        before = pve.calls["cluster_vms"]
        await ticker.tick()  # one read of the node's task list shows every end
        assert sorted(woken) == list(range(n))
        await asyncio.gather(*(d.once() for d in drivers))
        assert pve.calls["cluster_vms"] - before == 1, step  # N before: each end made everyone read
    assert pve.calls["power:start"] == n
    for vm in pve.vms.values():
        vm.agent_interfaces = AGENT
    before = pve.calls["cluster_vms"]
    await asyncio.gather(*(d.once() for d in drivers))  # the agent answers: no list read needed
    assert pve.calls["cluster_vms"] == before
    assert all((d.condition("Ready") or {}).get("status") == "True" for d in drivers)


async def test_a_change_of_my_own_needs_a_list_sent_after_it_and_others_keep_theirs() -> None:
    now = [0.0]
    pve = pve_with_template()
    inventory = Inventory(pve, max_age=54.0, clock=lambda: now[0])
    first = await inventory.get()
    now[0] = 5.0
    assert await inventory.get() is first  # young enough, and nothing asked for later
    assert await inventory.get(after=0.0) is first  # sent at 0: shows a change made at 0
    changed = await inventory.get(after=4.0)  # a task end seen at 4: the read at 0 cannot show it
    assert changed is not first and changed.asked_at == 5.0 and pve.calls["cluster_vms"] == 2
    now[0] = 6.0
    assert await inventory.get(after=4.0) is changed and await inventory.get() is changed
    assert pve.calls["cluster_vms"] == 2


class LostReply(FakeProxmox):
    """The first clone is made, but its reply never reaches the operator (a timeout)."""

    lose = True

    async def clone(self, node: str, template_vmid: int, newid: int, **kwargs: Any) -> str:
        upid = await super().clone(node, template_vmid, newid, **kwargs)
        if self.lose:
            self.lose = False
            raise ProxmoxUnavailable(f"clone template {template_vmid} to VM {newid}: read timed out")
        return upid


async def test_a_clone_whose_reply_was_lost_is_found_in_a_list_sent_after_the_attempt() -> None:
    pve = LostReply()
    pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
    drv = Driver(body(no_resize()), pve, max_age=54.0)  # the list of the first pass would still do
    await drv.once()
    assert pve.calls["clone"] == 1 and 100 in pve.vms
    drv.obj["status"] = {}  # and the status is lost too: only the VM's name and marker tell
    await drv.once()  # a list sent after the attempt shows the VM with our marker: taken back
    assert pve.calls["clone"] == 1 and sorted(pve.vms) == [100, 9000]
    assert any(e.reason == "Reclaimed" for o in drv.outcomes for e in o.events)


async def test_a_template_made_moments_ago_is_looked_for_in_a_fresh_list() -> None:
    pve = FakeProxmox()
    drv = Driver(body(no_resize()), pve, max_age=54.0)
    await drv.once()  # no template yet: TemplateNotFound, and a list the next pass could reuse
    assert drv.outcomes[-1].error is not None and drv.outcomes[-1].error.reason == "TemplateNotFound"
    assert pve.calls["cluster_vms"] == 2  # the quick list, then a fresh one to be sure
    pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
    await drv.once()
    assert pve.calls["clone"] == 1 and pve.calls["cluster_vms"] == 3


async def test_a_clone_found_again_while_it_runs_is_waited_for_not_written_to() -> None:
    """The status naming the clone's task was lost (a stale body, a wipe) while the clone runs: the VM
    is found by its name and marker, locked; the pass waits for the lock to go, then configures it
    once, with lists read after each wait (the shared one would show the lock for a minute)."""
    pve = pve_with_template()
    drv = Driver(body(no_resize()), pve, max_age=54.0)
    await drv.once()
    drv.obj["status"] = {}
    out = await drv.once()
    assert out.error is None and out.requeue_after == 3.0 and pve.calls["update_config"] == 0
    reads = pve.calls["cluster_vms"]
    out = await drv.once()  # still locked: seen in a new list
    assert out.requeue_after == 3.0 and pve.calls["cluster_vms"] == reads + 1
    pve.finish_tasks()
    await drv.once()
    assert pve.calls["update_config"] == 1 and pve.calls["power:start"] == 1
