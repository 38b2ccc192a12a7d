"""N sibling ProxmoxVMs whose first passes run together: what the batch costs Proxmox.

The fake yields to the event loop on every call, as the HTTP adapter does, so the passes interleave
the way the shared scheduler runs them: all of them ask for a vmid before the first clone lands.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from k3s_deploy.errors import ProxmoxBusy
from k3s_deploy.services.proxmoxvm.inventory import Sessions

from .driver import Driver, body
from .fake import FakeConnector, FakeProxmox
from .test_reconcile import clone_spec


class Interleaving(FakeProxmox):
    """Every call is a suspension point, like a call over the network; ``hidden`` ids are in use in
    Proxmox (a container, a VM the credential may not see) but left out of the VM list."""

    def __init__(self, hidden: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.hidden = hidden

    async def cluster_vms(self) -> Any:
        await asyncio.sleep(0)
        return [vm for vm in await super().cluster_vms() if vm.vmid not in self.hidden]

    async def next_vmid(self, candidate: int | None = None) -> int:
        await asyncio.sleep(0)
        if candidate is None and self.nextid_override is None:
            self._enter("next_vmid")
            return next(i for i in range(100, 10**6) if i not in self.vms and i not in self.hidden)
        return await super().next_vmid(candidate)

    async def clone(self, node: str, template_vmid: int, newid: int, **kwargs: Any) -> str:
        await asyncio.sleep(0)
        if newid in self.hidden:
            self._enter("clone")
            raise ProxmoxBusy(f"unable to create VM {newid}: config file already exists", reason="VmidTaken")
        return await super().clone(node, template_vmid, newid, **kwargs)


def siblings(pve: FakeProxmox, n: int) -> list[Driver]:
    sessions = Sessions(FakeConnector(pve), max_age=0.0)
    drivers = []
    for i in range(n):
        drv = Driver(body(clone_spec(), name=f"node-{i}", uid=f"00000000-0000-0000-0000-{i:012d}"), pve)
        drv.sessions = sessions  # one credential: one session, as in the operator
        drivers.append(drv)
    return drivers


def with_template(pve: FakeProxmox) -> FakeProxmox:
    pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
    return pve


@pytest.mark.parametrize("n", [1, 10, 50, 200])
async def test_n_siblings_cloned_together_cost_one_nextid_call(n: int) -> None:
    pve = with_template(Interleaving())
    drivers = siblings(pve, n)
    await asyncio.gather(*(drv.once() for drv in drivers))
    ids = sorted(drv.obj["status"]["vmid"] for drv in drivers)
    assert ids == list(range(100, 100 + n))  # every sibling got its own id, the lowest free ones
    assert pve.calls["clone"] == n  # and no clone was refused for an id a sibling had taken
    assert pve.calls["next_vmid"] == 1  # one answer served the whole batch (was n(n+1)/2)


async def test_an_id_taken_behind_our_back_is_refused_once_then_skipped() -> None:
    """The VM list does not show every id in use: the clone's refusal re-reads the floor, no storm."""
    pve = with_template(Interleaving(hidden=(101,)))
    drivers = siblings(pve, 3)
    await asyncio.gather(*(drv.once() for drv in drivers))
    ids = sorted(drv.obj["status"]["vmid"] for drv in drivers)
    assert ids == [100, 102, 103]
    assert pve.calls["clone"] == 4  # one refused (101), then 103
    assert pve.calls["next_vmid"] == 2  # the first floor, and one after the refusal
    assert all(drv.outcomes[-1].error is None for drv in drivers)


async def test_an_id_the_list_shows_taken_is_skipped_without_a_refused_clone() -> None:
    pve = with_template(FakeProxmox())
    pve.add_vm(100, name="someone-else")
    pve.nextid_override = 100  # a stale nextid answer: the VM list already shows 100
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    out = await drv.once()
    assert out.error is None and pve.calls["clone"] == 1
    assert drv.obj["status"]["vmid"] == 101
