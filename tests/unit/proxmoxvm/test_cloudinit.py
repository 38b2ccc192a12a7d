"""A guest must not stay booted with a stale cloud-init drive: checked once per boot, repaired by reboot."""

from __future__ import annotations

from typing import Any

from k3s_deploy.errors import ProxmoxUnavailable
from k3s_deploy.services.proxmoxvm import plan

from .driver import Driver, body
from .fake import FakeProxmox, FakeVm
from .test_reconcile import AGENT, KEY, clone_spec, pve_with_template

OLD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7nD5m7m1f0yb0l0ZKk7xq3Jv6e3yq2mQ3Yc9f0Xl0a old@host"


async def started_not_yet_answering(drv: Driver, pve: FakeProxmox) -> None:
    """Passes until the clone runs; the agent stays silent (the window a late write can land in)."""
    for _ in range(10):
        await drv.once()
        pve.finish_tasks()
        if 100 in pve.vms and pve.vms[100].status == "running":
            return
    raise AssertionError("the VM never started")


async def started_from_stale_drive() -> tuple[FakeProxmox, Driver, FakeVm]:
    """A clone whose start used a drive built before our keys were written (the write landed late)."""
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    await started_not_yet_answering(drv, pve)
    vm = pve.vms[100]
    vm.ci_drive = {"ciuser": "k3s"}
    vm.booted = dict(vm.ci_drive)
    vm.agent_interfaces = AGENT
    return pve, drv, vm


def long_running_vm(pve: FakeProxmox, **config: Any) -> FakeVm:
    """VM 120, up for a day, whose config got a new key in the Proxmox UI; its drive was not rebuilt."""
    config.setdefault("tags", "k3sdeploy-adoptable")  # an admin allowed its adoption
    vm = pve.add_vm(120, name="legacy", ciuser="k3s", sshkeys=OLD_KEY, **config)
    vm.boot()
    vm.status, vm.uptime, vm.agent_interfaces = "running", 86400, AGENT
    vm.config["sshkeys"] = KEY
    return vm


def reasons(drv: Driver) -> list[str]:
    return [e.reason for o in drv.outcomes for e in o.events]


def test_stale_entries_follow_pve_semantics() -> None:
    entries = [
        {"key": "ciuser", "value": "k3s"},  # unchanged since the drive was built
        {"key": "sshkeys", "value": "a", "pending": "b"},  # changed
        {"key": "nameserver", "pending": "10.0.0.1"},  # added
        {"key": "searchdomain", "value": "lab", "delete": 1},  # removed
        {"key": "ipconfig0", "value": "ip=dhcp", "pending": "ip=dhcp"},  # changed back
    ]
    assert plan.stale_cloud_init(entries) == ["nameserver", "searchdomain", "sshkeys"]
    assert plan.stale_cloud_init([{"key": "ciuser", "value": "k3s"}]) == []


async def test_write_landing_after_the_start_is_repaired_by_one_reboot() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve, max_age=60.0)
    await started_not_yet_answering(drv, pve)
    vm = pve.vms[100]
    assert vm.booted["sshkeys"] == KEY
    # an older write (crossing ours) lands after the start: config and guest now disagree
    vm.config["sshkeys"] = OLD_KEY
    vm.agent_interfaces = AGENT
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and "CloudInitStale" in reasons(drv)
    assert vm.config["sshkeys"] == KEY and vm.booted["sshkeys"] == KEY  # config fixed first, then booted
    assert (drv.condition("Ready") or {}).get("status") == "True"
    assert drv.condition("CloudInitStale") is None
    # steady state: no more checks, no more reboots
    for _ in range(3):
        drv.expire()
        pve.calls.clear()
        out = await drv.once()
        assert dict(pve.calls) == {"cluster_vms": 1} and out.events == []


async def test_drive_older_than_a_correct_config_is_rebuilt_by_reboot() -> None:
    pve, drv, vm = await started_from_stale_drive()
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and vm.booted["sshkeys"] == KEY
    assert pve.calls["update_config"] == 1  # the config was right: only the first configure wrote
    stale = [e for o in drv.outcomes for e in o.events if e.reason == "CloudInitStale"]
    assert len(stale) == 1 and "sshkeys" in stale[0].message and stale[0].type == "Warning"


async def test_fresh_drive_costs_one_call_per_boot_and_no_reboot() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    await drv.once()
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert pve.calls["cloudinit_pending"] == 1 and pve.calls["power:reboot"] == 0
    await drv.converge()
    assert pve.calls["cloudinit_pending"] == 1
    # a restart is a new boot: checked once more
    drv.obj["metadata"]["annotations"]["k3sdeploy.io/restart"] = "1"
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and pve.calls["cloudinit_pending"] == 2


async def test_no_cloud_init_in_spec_means_no_check() -> None:
    pve = pve_with_template()
    spec = clone_spec()
    del spec["cloudInit"]
    drv = Driver(body(spec), pve)
    await drv.once()
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert pve.calls["cloudinit_pending"] == 0


async def test_long_running_vm_is_not_rebooted_behind_the_users_back() -> None:
    pve = FakeProxmox()
    vm = long_running_vm(pve, tags="k3s;k3sdeploy-adoptable")
    spec = {"source": {"existing": {"vmid": 120}}, "cloudInit": {"user": "k3s", "sshAuthorizedKeys": [KEY]}}
    drv = Driver(body(spec), pve)
    await drv.converge()
    assert pve.calls["power:reboot"] == 0
    stale = drv.condition("CloudInitStale")
    assert stale is not None and stale["status"] == "True" and "sshkeys" in stale["message"]
    assert "k3sdeploy.io/restart" in stale["message"]
    await drv.converge()
    assert reasons(drv).count("CloudInitStale") == 1 and pve.calls["cloudinit_pending"] == 1
    # the user restarts it: the new boot has a current drive, the condition goes away
    drv.obj["metadata"]["annotations"]["k3sdeploy.io/restart"] = "now"
    vm.uptime = 0
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and vm.booted["sshkeys"] == KEY
    assert drv.condition("CloudInitStale") is None


async def test_restart_policy_automatic_reboots_a_long_running_vm() -> None:
    pve = FakeProxmox()
    vm = long_running_vm(pve)
    spec = {
        "source": {"existing": {"vmid": 120}},
        "restartPolicy": "Automatic",
        "cloudInit": {"sshAuthorizedKeys": [KEY]},
    }
    drv = Driver(body(spec), pve)
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and vm.booted["sshkeys"] == KEY


async def test_reboot_loop_is_bounded_and_reported() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    await started_not_yet_answering(drv, pve)
    vm = pve.vms[100]
    vm.agent_interfaces = AGENT
    real_boot = vm.boot

    def broken_boot() -> None:  # something rebuilds the drive wrong at every boot
        real_boot()
        vm.ci_drive = {}
        vm.booted = {}

    vm.boot = broken_boot  # type: ignore[method-assign]  # the fake's power task calls vm.boot()
    vm.ci_drive, vm.booted = {}, {}
    await drv.converge()
    assert pve.calls["power:reboot"] == 2
    stale = drv.condition("CloudInitStale")
    assert stale is not None and "after 2 reboots" in stale["message"]
    await drv.converge()
    assert pve.calls["power:reboot"] == 2


async def test_failed_configure_is_read_again_before_the_start() -> None:
    # An adopted VM: the spec's tags are already there, so the shared list shows no drift.
    pve = FakeProxmox()
    pve.add_vm(120, name="legacy", tags="k3s;k3sdeploy-adoptable", ciuser="k3s", sshkeys=OLD_KEY)
    spec = {
        "source": {"existing": {"vmid": 120}},
        "tags": ["k3s"],
        "cloudInit": {"user": "k3s", "sshAuthorizedKeys": [KEY]},
    }
    pve.fail["update_config"] = ProxmoxUnavailable("configure VM 120: 503 simulated")
    drv = Driver(body(spec), pve)
    pve.vms[120].agent_interfaces = AGENT
    await drv.converge()
    vm = pve.vms[120]
    assert vm.config["sshkeys"] == KEY and vm.booted["sshkeys"] == KEY
    assert pve.calls["power:start"] == 1 and pve.calls["power:reboot"] == 0


async def test_vm_without_cloud_init_drive_stalls_before_the_start() -> None:
    pve = FakeProxmox()
    tpl = pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
    del tpl.config["ide2"]
    drv = Driver(body(clone_spec()), pve)
    await drv.converge()
    stalled = drv.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "NoCloudInitDrive", drv.obj["status"]
    assert "ide2" in stalled["message"] and pve.calls["power:start"] == 0
    assert "k3sdeploy-0a1b2c3d11112222" in pve.vms[100].tags  # configured (ownership) all the same
    # the user adds a drive: the next resync notices and the VM starts with its keys
    pve.vms[100].config["ide2"] = "local-lvm:vm-100-cloudinit,media=cdrom"
    pve.vms[100].agent_interfaces = AGENT
    drv.expire()
    await drv.converge()
    assert pve.vms[100].booted["sshkeys"] == KEY
    assert (drv.condition("Ready") or {}).get("status") == "True"


async def test_key_change_on_a_running_vm_waits_for_a_restart_unless_bringing_up() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    await drv.once()
    vm = pve.vms[100]
    vm.agent_interfaces = AGENT
    await drv.converge()
    # long after boot, the user rotates the key: written at once, the guest sees it only after a boot
    vm.uptime = 86400
    drv.bump(cloudInit={"user": "k3s", "sshAuthorizedKeys": [OLD_KEY], "ipConfig": {"dhcp": True}})
    await drv.converge()
    assert vm.config["sshkeys"] == OLD_KEY and vm.booted["sshkeys"] == KEY
    assert pve.calls["power:reboot"] == 0
    stale = drv.condition("CloudInitStale")
    assert stale is not None and stale["reason"] == "RestartRequired" and "sshkeys" in stale["message"]
    drv.obj["metadata"]["annotations"]["k3sdeploy.io/restart"] = "rotate"
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and vm.booted["sshkeys"] == OLD_KEY
    assert drv.condition("CloudInitStale") is None
    # during bring-up (uptime below the agent timeout) the same change reboots by itself
    vm.uptime = 10
    drv.bump(cloudInit={"user": "k3s", "sshAuthorizedKeys": [KEY], "ipConfig": {"dhcp": True}})
    await drv.converge()
    assert pve.calls["power:reboot"] == 2 and vm.booted["sshkeys"] == KEY


async def test_a_failed_check_is_tried_again_at_the_next_pass() -> None:
    pve, drv, vm = await started_from_stale_drive()
    pve.fail["cloudinit_pending"] = ProxmoxUnavailable("read the cloud-init drive state of VM 100: 500")
    await drv.converge()
    assert pve.calls["cloudinit_pending"] >= 2 and pve.calls["power:reboot"] == 1
    assert vm.booted["sshkeys"] == KEY
