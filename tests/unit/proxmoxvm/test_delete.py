"""Deletion under each policy, the ownership guard, and letting go with the orphan annotation."""

from __future__ import annotations

import pytest

from k3s_deploy.errors import InvalidSpec, ProxmoxUnavailable

from .driver import Driver, body
from .test_reconcile import clone_spec, pve_with_template


async def provisioned(**extra: object) -> Driver:
    drv = Driver(
        body(clone_spec(powerState="Running", guestAgent={"timeoutSeconds": 10}, **extra)),
        pve_with_template(),
    )
    await drv.converge()
    assert drv.proxmox.vms[100].status == "running"
    return drv


async def test_delete_stops_then_destroys() -> None:
    drv = await provisioned()
    assert await drv.delete()
    assert 100 not in drv.proxmox.vms
    assert drv.proxmox.calls["power:stop"] == 1 and drv.proxmox.calls["destroy"] == 1


async def test_stop_and_retain_keep_the_vm() -> None:
    drv = await provisioned(deletionPolicy="Stop")
    assert await drv.delete()
    assert drv.proxmox.vms[100].status == "stopped" and drv.proxmox.calls["destroy"] == 0
    drv = await provisioned(deletionPolicy="Retain")
    assert await drv.delete()
    assert drv.proxmox.vms[100].status == "running"


async def test_foreign_vm_is_not_destroyed_and_orphan_lets_go() -> None:
    drv = await provisioned()
    drv.proxmox.vms[100].config["tags"] = "k3s"  # someone removed our tag
    with pytest.raises(InvalidSpec):
        await drv.delete()
    assert 100 in drv.proxmox.vms
    drv.proxmox.fail["cluster_vms"] = ProxmoxUnavailable("down")
    with pytest.raises(ProxmoxUnavailable):
        await drv.delete()
    drv.obj["metadata"]["annotations"]["k3sdeploy.io/orphan"] = "true"
    assert await drv.delete()
    assert 100 in drv.proxmox.vms


async def test_clone_interrupted_before_configure_is_still_destroyed() -> None:
    """Killed between clone and configure: no ownership tag yet, but our marker; Delete destroys it."""
    drv = Driver(body(clone_spec()), pve_with_template())
    await drv.once()  # clone started, the operator stops here (killed)
    drv.proxmox.finish_tasks()
    assert "k3sdeploy-" not in drv.proxmox.vms[100].config.get("tags", "")
    assert await drv.delete()
    assert 100 not in drv.proxmox.vms
