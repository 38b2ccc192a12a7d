"""The shared VM list: lookups by vmid, and one Proxmox read serving many askers."""

from __future__ import annotations

import asyncio
from typing import Any

from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.proxmoxvm.inventory import Inventory, Snapshot


def test_by_vmid_finds_each_vm_and_nothing_else() -> None:
    vms = [VmSummary(vmid=100 + i, node=f"pve{i % 3}", name=f"vm{i}") for i in range(50)]
    snap = Snapshot(vms=vms, taken_at=0.0, wall_time=0.0)
    assert all(snap.by_vmid(vm.vmid) is vm for vm in vms)
    assert snap.by_vmid(99) is None
    assert snap.by_vmid(150) is None


def test_by_vmid_keeps_the_first_listed_when_a_vmid_repeats() -> None:
    first, second = VmSummary(vmid=7, node="pve1", name="a"), VmSummary(vmid=7, node="pve2", name="b")
    assert Snapshot(vms=[first, second], taken_at=0.0, wall_time=0.0).by_vmid(7) is first


class _CountingClient:
    def __init__(self) -> None:
        self.calls = 0

    async def cluster_vms(self) -> list[VmSummary]:
        self.calls += 1
        await asyncio.sleep(0.01)
        return [VmSummary(vmid=100, node="pve1")]

    async def cluster_resources(self) -> tuple[list[VmSummary], list[Any]]:
        return await self.cluster_vms(), []


async def test_concurrent_askers_share_one_read_until_invalidated() -> None:
    client = _CountingClient()
    inventory = Inventory(client, max_age=60.0)  # type: ignore[arg-type]  # only cluster_resources is used
    snaps: list[Any] = await asyncio.gather(*(inventory.get() for _ in range(20)))
    assert client.calls == 1 and all(s is snaps[0] for s in snaps)
    inventory.invalidate()
    await inventory.get()
    assert client.calls == 2
