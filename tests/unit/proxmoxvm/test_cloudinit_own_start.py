"""The first boot of a VM this process cloned, configured and started in one pass needs no look at its
cloud-init drive: the start built it from the config that pass read and wrote. Any doubt brings the
look back: a write of ours that failed (it may land after the start), or a VM an earlier process made
(its writes are unknown here)."""

from __future__ import annotations

from k3s_deploy.errors import ProxmoxUnavailable
from k3s_deploy.services.proxmoxvm.work import Memory

from .driver import Driver, body
from .fake import FakeProxmox
from .test_cloudinit import OLD_KEY, started_not_yet_answering
from .test_reconcile import AGENT, KEY, clone_spec, pve_with_template


def no_resize() -> dict[str, object]:
    """The template's disk as it is: configure and start happen in the same pass (no resize task)."""
    return clone_spec(resources={"cores": 2, "memoryMiB": 2048})


async def test_a_vm_this_process_configured_then_started_is_not_checked_at_first_contact() -> None:
    pve = pve_with_template()
    drv = Driver(body(no_resize()), pve)
    await started_not_yet_answering(drv, pve)
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert (drv.condition("Ready") or {}).get("status") == "True"
    assert pve.calls["cloudinit_pending"] == 0 and pve.calls["power:reboot"] == 0
    # a restart is a boot this pass did not configure: checked as before
    drv.obj["metadata"]["annotations"]["k3sdeploy.io/restart"] = "1"
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and pve.calls["cloudinit_pending"] == 1


async def test_after_an_operator_restart_the_first_contact_checks_the_drive() -> None:
    pve = pve_with_template()
    drv = Driver(body(no_resize()), pve)
    await started_not_yet_answering(drv, pve)
    drv.memory = Memory()  # a new process: it cannot know what the last one wrote
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert pve.calls["cloudinit_pending"] == 1


async def test_a_failed_write_that_lands_after_the_start_is_still_caught() -> None:
    pve = pve_with_template()
    drv = Driver(body(no_resize()), pve, max_age=60.0)
    await drv.once()  # clone started
    pve.finish_tasks()
    pve.fail["update_config"] = ProxmoxUnavailable("configure VM 100: timed out")  # went through anyway?
    await drv.once()
    await started_not_yet_answering(drv, pve)  # written again, then started
    vm = pve.vms[100]
    assert vm.booted["sshkeys"] == KEY
    vm.config["sshkeys"] = OLD_KEY  # the first write landed late, after the start
    vm.agent_interfaces = AGENT
    await drv.converge()
    assert pve.calls["cloudinit_pending"] >= 1 and pve.calls["power:reboot"] == 1
    assert vm.config["sshkeys"] == KEY and vm.booted["sshkeys"] == KEY


async def test_a_vm_found_again_not_cloned_by_this_process_is_checked() -> None:
    pve = FakeProxmox()
    pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
    drv = Driver(body(no_resize()), pve)
    await drv.once()  # clone started; the operator restarts while it runs
    drv.memory = Memory()
    pve.finish_tasks()
    await started_not_yet_answering(drv, pve)
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert pve.calls["cloudinit_pending"] == 1
