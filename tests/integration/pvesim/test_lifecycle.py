"""Clone, power, config, cloud-init, agent, resize and destroy, through proxmoxer like the operator."""

from __future__ import annotations

import pytest
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

from fixtures.pve import PveSim
from integration.pvesim.helpers import eventually, raw

pytestmark = pytest.mark.integration


def _resource(pve_sim: PveSim, vmid: int) -> dict[str, object] | None:
    return next((r for r in pve_sim.api().cluster.resources.get(type="vm") if r["vmid"] == vmid), None)


def test_linked_clone_shows_lock_then_drops_template_flag_and_gets_new_macs(pve_sim: PveSim) -> None:
    pve_sim.set_timing(tasks={"qmclone": 100})  # x0.01 scale: 1 s, long enough to observe the lock
    api = pve_sim.api()
    upid = api.nodes("pve1").qemu(9001).clone.post(newid=200, name="k3s-a", description="made by a test")
    assert upid.split(":")[5:8] == ["qmclone", "9001", "root@pam!k3s-operator"]
    assert Tasks.decode_upid(upid)["node"] == "pve1"
    during = _resource(pve_sim, 200)
    assert during is not None and during["lock"] == "clone" and during["status"] == "unknown"
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(200).config.put(cores=4)
    assert (err.value.status_code, err.value.content) == (500, "VM is locked (clone)")
    assert pve_sim.wait_task(upid)["exitstatus"] == "OK"
    src, new = api.nodes("pve1").qemu(9001).config.get(), api.nodes("pve1").qemu(200).config.get()
    assert "lock" not in new and "template" not in new and new["name"] == "k3s-a"
    assert new["description"] == "made by a test"
    assert new["net0"] != src["net0"] and new["net0"].startswith("virtio=BC:24:11:")
    assert new["scsi0"].startswith("local-lvm:base-9001-disk-0/vm-200-disk-0")
    assert new["smbios1"] != src["smbios1"]
    assert "lock" not in (_resource(pve_sim, 200) or {})
    # the template's base volume is in use now: destroying the template fails inside the task
    status = pve_sim.wait_task(api.nodes("pve1").qemu(9001).delete())
    assert status["exitstatus"] == "base volume 'base-9001-disk-0' is still in use by linked cloned"
    log = api.nodes("pve1").tasks(upid).log.get()
    assert log[-1]["t"] == "TASK OK" and any("linked clone of drive scsi0" in line["t"] for line in log)


def test_template_on_local_storage_cannot_be_cloned_to_another_node(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(9001).clone.post(newid=201, target="pve2")
    assert (err.value.status_code, err.value.content) == (
        500,
        "can't clone VM to node 'pve2' (VM uses local storage)",
    )
    # from shared storage it works, and the VM appears on the target node
    upid = api.nodes("pve1").qemu(9000).clone.post(newid=201, target="pve2", full=1, storage="shared")
    assert pve_sim.wait_task(upid)["exitstatus"] == "OK"
    assert api.nodes("pve2").qemu(201).config.get()["scsi0"].startswith("shared:vm-201-disk-0")


def test_duplicate_newid_and_linked_clone_of_non_template(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(9001).clone.post(newid=100)
    assert err.value.content == "unable to create VM 100: config file already exists"
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(110).clone.post(newid=202, full=0)
    assert err.value.status_code == 500


def test_failed_clone_removes_target_and_reports_error(pve_sim: PveSim) -> None:
    pve_sim.set_faults(
        taskFailures=[{"type": "qmclone", "message": "clone failed: storage full", "remaining": 1}]
    )
    upid = pve_sim.api().nodes("pve1").qemu(9001).clone.post(newid=203)
    status = pve_sim.wait_task(upid)
    assert status["exitstatus"] == "clone failed: storage full"
    assert _resource(pve_sim, 203) is None
    log = pve_sim.api().nodes("pve1").tasks(upid).log.get()
    assert log[-1]["t"] == "TASK ERROR: clone failed: storage full"


def test_power_cycle_agent_and_addresses(pve_sim: PveSim) -> None:
    pve_sim.set_timing(bootDelay=50)  # 0.5 s
    api = pve_sim.api()
    vm = api.nodes("pve1").qemu(9001)
    pve_sim.wait_task(vm.clone.post(newid=210, name="node-a"))
    new = api.nodes("pve1").qemu(210)
    with pytest.raises(ResourceException) as err:
        new.status.reboot.post()
    assert (err.value.status_code, err.value.content) == (500, "VM 210 not running")
    with pytest.raises(ResourceException) as err:
        new.agent("network-get-interfaces").get()
    assert err.value.content == "VM 210 is not running"
    assert pve_sim.wait_task(new.status.start.post())["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as err:
        new.agent.ping.post()
    assert err.value.content == "QEMU guest agent is not running"
    eventually(lambda: _agent_ok(new), timeout=5)
    ifaces = new.agent("network-get-interfaces").get()["result"]
    eth0 = next(i for i in ifaces if i["name"] == "eth0")
    v4 = [a["ip-address"] for a in eth0["ip-addresses"] if a["ip-address-type"] == "ipv4"]
    assert len(v4) == 1 and pve_sim.leased(v4[0])
    assert eth0["hardware-address"] == new.config.get()["net0"].split(",")[0].split("=")[1].lower()
    guest = next(g for g in pve_sim.guests()["guests"] if g["vmid"] == 210)
    assert guest["addresses"] == v4 and guest["agentReady"] and guest["status"] == "running"
    # a second start fails inside the task
    again = pve_sim.wait_task(new.status.start.post())
    assert again["exitstatus"] == "VM 210 already running"
    # stopping and starting keeps the DHCP lease
    pve_sim.wait_task(new.status.stop.post())
    assert new.status.current.get()["status"] == "stopped"
    assert pve_sim.wait_task(new.status.stop.post())["exitstatus"] == "OK"  # stop of a stopped VM is fine
    pve_sim.wait_task(new.status.start.post())
    eventually(lambda: _agent_ok(new), timeout=5)
    eth0 = next(i for i in new.agent("network-get-interfaces").get()["result"] if i["name"] == "eth0")
    assert [a["ip-address"] for a in eth0["ip-addresses"] if a["ip-address-type"] == "ipv4"] == v4


def _agent_ok(vm: object) -> bool:
    try:
        vm.agent.ping.post()  # type: ignore[attr-defined]
    except ResourceException:
        return False
    return True


def test_static_ipconfig_applies_at_next_boot(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.wait_task(api.nodes("pve1").qemu(9001).clone.post(newid=211, name="static-a"))
    vm = api.nodes("pve1").qemu(211)
    pve_sim.wait_task(vm.config.post(ipconfig0="ip=127.4.0.10/24,gw=127.4.0.1", ciuser="k3s"))
    pve_sim.wait_task(vm.status.start.post())
    guest = eventually(
        lambda: next((g for g in pve_sim.guests()["guests"] if g["vmid"] == 211 and g["agentReady"]), None)
    )
    assert (
        guest["addresses"] == ["127.4.0.10"] and guest["ciuser"] == "k3s" and guest["hostname"] == "static-a"
    )
    # changed while running: cloud-init config applies to the config at once, but the guest sees it at reboot
    vm.config.put(ipconfig0="ip=127.4.0.11/24,gw=127.4.0.1")
    assert next(g for g in pve_sim.guests()["guests"] if g["vmid"] == 211)["addresses"] == ["127.4.0.10"]
    pending = {e["key"]: e for e in vm.cloudinit.get()}
    assert pending["ipconfig0"]["pending"] == "ip=127.4.0.11/24,gw=127.4.0.1"
    pve_sim.wait_task(vm.status.reboot.post())
    assert next(g for g in pve_sim.guests()["guests"] if g["vmid"] == 211)["addresses"] == ["127.4.0.11"]
    network = vm.cloudinit.dump.get(type="network")
    assert "address: 127.4.0.11" in network and "gateway: 127.4.0.1" in network


def test_config_digest_pending_and_delete(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    vm = api.nodes("pve1").qemu(100)  # running
    digest = vm.config.get()["digest"]
    vm.config.put(cores=4, digest=digest)
    with pytest.raises(ResourceException) as err:
        vm.config.put(cores=8, digest=digest)
    assert (err.value.status_code, err.value.content) == (
        500,
        "checksum mismatch (file change by other user?)",
    )
    # cores is not hot-pluggable: pending until the next start; name applies at once
    assert vm.config.get(current=1)["cores"] == 2 and vm.config.get()["cores"] == 4
    assert {"key": "cores", "value": 2, "pending": 4} in vm.pending.get()
    vm.config.put(name="renamed")
    assert vm.config.get(current=1)["name"] == "renamed"
    vm.config.put(delete="ciuser")
    assert "ciuser" not in vm.config.get()
    with pytest.raises(ResourceException) as err:
        vm.config.put()
    assert (err.value.status_code, err.value.content) == (500, "no options specified")
    with pytest.raises(ResourceException) as err:
        vm.config.put(delete="nonsense")
    assert err.value.status_code == 400
    pve_sim.wait_task(vm.status.reboot.post())
    assert vm.config.get(current=1)["cores"] == 4 and vm.pending.get() == [
        e for e in vm.pending.get() if "pending" not in e
    ]


def test_deleting_a_disk_key_detaches_it_as_unused_unless_forced(pve_sim: PveSim) -> None:
    """PVE keeps a deleted disk's volume as ``unusedN`` (only ``force`` or deleting ``unusedN`` frees
    it); a cloud-init drive just goes."""
    vm = pve_sim.api().nodes("pve3").qemu(102)  # stopped: applied at once
    assert pve_sim.wait_task(vm.config.post(delete="scsi0"))["exitstatus"] == "OK"
    config = vm.config.get()
    assert "scsi0" not in config and config["unused0"] == "local-lvm:vm-102-disk-0"
    vm.config.put(scsi1="local-lvm:vm-102-disk-1,size=8G")
    vm.config.put(delete="scsi1")
    assert vm.config.get()["unused1"] == "local-lvm:vm-102-disk-1"
    vm.config.put(delete="unused0")  # deleting the unused entry is what frees a volume
    config = vm.config.get()
    assert "unused0" not in config and config["unused1"] == "local-lvm:vm-102-disk-1"
    vm.config.put(scsi2="local-lvm:vm-102-disk-2,size=8G")
    vm.config.put(delete="scsi2", force=1)
    vm.config.put(delete="ide2")  # the cloud-init drive
    config = vm.config.get()
    assert "scsi2" not in config and "ide2" not in config
    assert sorted(k for k in config if k.startswith("unused")) == ["unused1"]


def test_async_config_post_returns_a_task(pve_sim: PveSim) -> None:
    vm = pve_sim.api().nodes("pve1").qemu(110)
    upid = vm.config.post(memory="4096", cipassword="s3cret")
    assert upid.split(":")[5] == "qmconfig"
    assert pve_sim.wait_task(upid)["exitstatus"] == "OK"
    config = vm.config.get()
    assert config["memory"] == "4096" and config["cipassword"] == "**********"


def test_template_cannot_start_and_destroy_rules(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    assert pve_sim.wait_task(api.nodes("pve1").qemu(9001).status.start.post())["exitstatus"] == (
        "you can't start a vm if it's a template"
    )
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(100).delete()
    assert err.value.content == "VM 100 is running - destroy failed"
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(110).delete()
    assert err.value.content == "can't remove VM 110 - protection mode enabled"
    upid = api.nodes("pve3").qemu(102).delete(purge=1, **{"destroy-unreferenced-disks": 1})
    assert upid.split(":")[5] == "qmdestroy"
    assert pve_sim.wait_task(upid)["exitstatus"] == "OK"
    assert _resource(pve_sim, 102) is None
    resp = raw(pve_sim, "GET", "/nodes/pve3/qemu/102/status/current")
    assert resp.status_code == 500 and "does not exist" in resp.reason


def test_locked_vm_fails_start_in_the_task(pve_sim: PveSim) -> None:
    pve_sim.lock_vm(110, "backup", seconds=30)
    assert _resource(pve_sim, 110)["lock"] == "backup"  # type: ignore[index]
    status = pve_sim.wait_task(pve_sim.api().nodes("pve1").qemu(110).status.start.post())
    assert status["exitstatus"] == "VM is locked (backup)"


def test_resize_grows_only(pve_sim: PveSim) -> None:
    vm = pve_sim.api().nodes("pve1").qemu(110)
    assert pve_sim.wait_task(vm.resize.put(disk="scsi0", size="+2G"))["exitstatus"] == "OK"
    assert "size=66G" in vm.config.get()["scsi0"]
    assert (
        pve_sim.wait_task(vm.resize.put(disk="scsi0", size="10G"))["exitstatus"]
        == "shrinking disks is not supported"
    )
    assert (
        pve_sim.wait_task(vm.resize.put(disk="scsi3", size="+1G"))["exitstatus"]
        == "disk 'scsi3' does not exist"
    )


def test_shutdown_timeout_and_force_stop(pve_sim: PveSim) -> None:
    vm = pve_sim.api().nodes("pve1").qemu(100)
    pve_sim.set_faults(ignoreShutdown=[100])
    assert (
        pve_sim.wait_task(vm.status.shutdown.post(timeout=1))["exitstatus"]
        == "VM quit/powerdown failed - got timeout"
    )
    assert vm.status.current.get()["status"] == "running"
    assert pve_sim.wait_task(vm.status.shutdown.post(timeout=1, forceStop=1))["exitstatus"] == "OK"
    assert vm.status.current.get()["status"] == "stopped"


def test_suspend_resume_and_qmpstatus(pve_sim: PveSim) -> None:
    vm = pve_sim.api().nodes("pve1").qemu(100)
    pve_sim.wait_task(vm.status.suspend.post())
    current = vm.status.current.get()
    assert (current["status"], current["qmpstatus"]) == ("running", "paused")
    assert next(g for g in pve_sim.guests()["guests"] if g["vmid"] == 100)["status"] == "stopped"
    pve_sim.wait_task(vm.status.resume.post())
    assert vm.status.current.get()["qmpstatus"] == "running"


def test_cluster_resources_status_lags_behind(pve_sim: PveSim) -> None:
    pve_sim.set_timing(resourcesStatusLag=100)  # 1 s
    vm = pve_sim.api().nodes("pve1").qemu(110)
    pve_sim.wait_task(vm.status.start.post())
    assert vm.status.current.get()["status"] == "running"
    assert _resource(pve_sim, 110)["status"] == "stopped"  # type: ignore[index]
    eventually(lambda: _resource(pve_sim, 110)["status"] == "running", timeout=5)  # type: ignore[index]


def test_without_a_cloudinit_drive_nothing_is_applied(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.wait_task(api.nodes("pve1").qemu(9001).clone.post(newid=212, name="no-drive"))
    vm = api.nodes("pve1").qemu(212)
    vm.config.put(delete="ide2", ciuser="k3s", ipconfig0="ip=127.4.0.20/24", agent="0")
    pve_sim.wait_task(vm.status.start.post())
    guest = eventually(
        lambda: next((g for g in pve_sim.guests()["guests"] if g["vmid"] == 212 and g["agentReady"]), None)
    )
    # agentReady means "booted" even without an agent; the image falls back to DHCP and its own user
    assert guest["agent"] is False and guest["ciuser"] is None and guest["sshkeys"] == []
    assert len(guest["addresses"]) == 1 and pve_sim.leased(guest["addresses"][0])
    with pytest.raises(ResourceException) as err:
        vm.agent.ping.post()
    assert err.value.content == "No QEMU guest agent configured"


def test_convert_to_template_then_linked_clone(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.wait_task(api.nodes("pve1").qemu(9000).clone.post(newid=220, name="golden", full=1))
    vm = api.nodes("pve1").qemu(220)
    upid = vm.template.post()
    assert upid.split(":")[5] == "qmtemplate" and pve_sim.wait_task(upid)["exitstatus"] == "OK"
    config = vm.config.get()
    assert config["template"] == 1 and config["scsi0"].startswith("shared:base-220-disk-0")
    with pytest.raises(ResourceException) as err:
        vm.template.post()
    assert err.value.content == "you can't convert a template to a template"
    pve_sim.wait_task(vm.clone.post(newid=221, name="from-golden"))
    assert (
        api.nodes("pve1").qemu(221).config.get()["scsi0"].startswith("shared:base-220-disk-0/vm-221-disk-0")
    )
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(100).template.post()
    assert err.value.content == "you can't convert a VM to template if VM is running"


def test_cloudinit_put_regenerates_the_drive(pve_sim: PveSim) -> None:
    vm = pve_sim.api().nodes("pve1").qemu(100)
    vm.config.put(nameserver="127.0.0.53", searchdomain="lab.test")
    pending = {e["key"]: e for e in vm.cloudinit.get()}
    assert pending["nameserver"] == {"key": "nameserver", "pending": "127.0.0.53"}
    assert vm.cloudinit.put() is None
    regenerated = {e["key"]: e for e in vm.cloudinit.get()}
    assert regenerated["nameserver"] == {"key": "nameserver", "value": "127.0.0.53"}
    assert "fqdn: legacy-k3s-server-1.lab.test" in vm.cloudinit.dump.get(type="user")
    assert vm.cloudinit.dump.get(type="meta").startswith("instance-id: ")


def test_stopping_a_clone_task_removes_the_half_made_vm(pve_sim: PveSim) -> None:
    pve_sim.set_timing(tasks={"qmclone": 500})  # 5 s
    api = pve_sim.api()
    upid = api.nodes("pve1").qemu(9001).clone.post(newid=230)
    assert _resource(pve_sim, 230) is not None
    assert api.nodes("pve1").tasks(upid).delete() is None
    status = api.nodes("pve1").tasks(upid).status.get()
    assert (status["status"], status["exitstatus"]) == ("stopped", "interrupted by signal")
    assert _resource(pve_sim, 230) is None


def test_reset_reboots_the_guest_without_pending_changes(pve_sim: PveSim) -> None:
    pve_sim.set_timing(bootDelay=50)  # 0.5 s
    vm = pve_sim.api().nodes("pve1").qemu(100)
    vm.config.put(cores=6)  # pending: not hot-pluggable
    assert pve_sim.wait_task(vm.status.reset.post())["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as err:
        vm.agent.ping.post()
    assert err.value.content == "QEMU guest agent is not running"
    assert vm.config.get(current=1)["cores"] == 2  # a reset is not a new start: pending stays pending
    eventually(lambda: _agent_ok(vm), timeout=5)
