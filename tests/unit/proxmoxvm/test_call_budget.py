"""Reads a pass need not repeat: the config once per pass, status/current once per list read, the node
list with the VM list (or once for siblings placing together, without Sys.Audit)."""

from __future__ import annotations

import asyncio

from k3s_deploy.ports.proxmox import NodeSummary, VmSummary

from .driver import Driver, body
from .fake import FakeProxmox
from .test_reconcile import AGENT, clone_spec
from .test_siblings import siblings, with_template


class LaggingList(FakeProxmox):
    """``/cluster/resources`` still shows every VM as stopped (its status lags the live one)."""

    async def cluster_vms(self) -> list[VmSummary]:
        vms = await super().cluster_vms()
        return [VmSummary(**{**vm.__dict__, "status": "stopped"}) if not vm.template else vm for vm in vms]


async def test_the_ownership_check_and_configure_share_one_config_read() -> None:
    pve = with_template(FakeProxmox())
    drv = Driver(body(clone_spec()), pve)
    await drv.once()  # clone started
    pve.finish_tasks()
    before = pve.calls["vm_config"]
    await drv.once()  # is it ours (no tag yet: the marker in the config)? then configure it
    assert pve.calls["update_config"] == 1
    assert pve.calls["vm_config"] - before == 1


async def test_a_lagging_list_is_confirmed_once_per_read_not_once_per_pass() -> None:
    pve = with_template(LaggingList())
    drv = Driver(body(clone_spec()), pve, max_age=60.0)  # passes share one list read
    for _ in range(4):  # clone, resize, start
        await drv.once()
        pve.finish_tasks()
    assert pve.vms[100].status == "running" and pve.calls["power:start"] == 1
    before = pve.calls["vm_status"]  # the list read after the start was confirmed already
    for _ in range(5):  # waiting for the agent: the list still says stopped, the answer holds
        await drv.once()
    assert pve.calls["vm_status"] == before and pve.calls["power:start"] == 1
    drv.expire()  # a new list read: confirmed again, once
    pve.vms[100].agent_interfaces = AGENT
    await drv.once()
    await drv.once()
    assert pve.calls["vm_status"] == before + 1
    assert (drv.condition("Ready") or {}).get("status") == "True"


class NoSysAudit(FakeProxmox):
    """A credential without Sys.Audit on the nodes: ``/cluster/resources`` lists no node."""

    async def cluster_resources(self) -> tuple[list[VmSummary], list[NodeSummary]]:
        return await self.cluster_vms(), []


async def test_siblings_placing_together_take_the_nodes_from_the_vm_list_read() -> None:
    pve = with_template(FakeProxmox())
    drivers = siblings(pve, 20)
    await asyncio.gather(*(drv.once() for drv in drivers))
    assert pve.calls["clone"] == 20 and pve.calls["nodes"] == 0


async def test_without_node_entries_in_the_list_siblings_read_the_node_list_once() -> None:
    pve = with_template(NoSysAudit())
    drivers = siblings(pve, 20)
    await asyncio.gather(*(drv.once() for drv in drivers))
    assert pve.calls["clone"] == 20 and pve.calls["nodes"] == 1
