"""Reconcile passes against the in-memory Proxmox: clone, adopt, configure, power, agent, errors."""

from __future__ import annotations

from typing import Any

from k3s_deploy.errors import ProxmoxBusy, ProxmoxPermissionDenied, ProxmoxUnavailable
from k3s_deploy.ports.proxmox import GuestInterface
from k3s_deploy.services.proxmoxvm.reconcile import reconcile
from k3s_deploy.services.proxmoxvm.vmids import VmidAllocator

from .driver import Driver, body
from .fake import FakeProxmox

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host"
AGENT = [
    GuestInterface("lo", "00:00:00:00:00:00", ("127.0.0.1", "::1")),
    GuestInterface("eth0", "bc:24:11:00:00:01", ("127.0.10.5", "fe80::1")),
]


def cluster_owner_ref(name: str, uid: str) -> dict[str, object]:
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "K3sCluster",
        "name": name,
        "uid": uid,
        "controller": True,
    }


def pve_with_template() -> FakeProxmox:
    pve = FakeProxmox()
    pve.add_vm(9000, "pve1", template=True, name="debian-tpl", tags="tpl")
    return pve


def clone_spec(**extra: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "source": {"clone": {"template": {"name": "debian-tpl"}}},
        "resources": {"cores": 2, "memoryMiB": 2048, "diskGiB": 16},
        "cloudInit": {"user": "k3s", "sshAuthorizedKeys": [KEY], "ipConfig": {"dhcp": True}},
        "tags": ["k3s"],
    }
    spec.update(extra)
    return spec


async def test_clone_configure_start_to_ready() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    # the agent answers once the VM runs
    out = await drv.once()
    assert out.requeue_after is not None and pve.calls["clone"] == 1
    vmid = drv.obj["status"]["vmid"]
    assert vmid == 100 and drv.checkpoints[0]["vmid"] == 100  # recorded before the clone started
    assert drv.obj["status"]["taskRef"]["action"] == "clone"
    pve.vms[100].agent_interfaces = AGENT
    out = await drv.converge()
    vm = pve.vms[100]
    assert vm.config["cores"] == 2 and vm.config["memory"] == 2048 and vm.config["scsi0"].endswith("size=16G")
    assert (
        vm.config["sshkeys"] == KEY and vm.config["ipconfig0"] == "ip=dhcp" and vm.config["ciuser"] == "k3s"
    )
    assert {"k3s", "tpl", "k3sdeploy-0a1b2c3d11112222"} <= vm.tags
    assert vm.status == "running"
    status = drv.obj["status"]
    assert status["addresses"] == ["127.0.10.5"]
    assert status["powerState"] == "Running" and status["observedGeneration"] == 1
    ready = drv.condition("Ready")
    assert ready is not None and ready["status"] == "True", drv.obj["status"]["conditions"]
    assert drv.condition("Reconciling") is None and drv.condition("Stalled") is None
    reasons = [e.reason for o in drv.outcomes for e in o.events]
    assert "CloneStarted" in reasons and "Configured" in reasons and "StartStarted" in reasons
    assert len(pve.vms) == 2


async def test_steady_state_costs_no_per_vm_call() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve, max_age=60.0)
    await drv.once()
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    drv.expire()  # one resync interval later
    pve.calls.clear()
    out = await drv.once()
    assert out.requeue_after is None and out.events == []
    assert dict(pve.calls) == {"cluster_vms": 1}


async def test_adopt_changes_only_what_spec_asks() -> None:
    pve = FakeProxmox()
    vm = pve.add_vm(105, "pve2", name="legacy", tags="old;k3sdeploy-adoptable", cores=4)
    vm.status, vm.uptime, vm.agent_interfaces = "running", 50, AGENT
    drv = Driver(body({"source": {"existing": {"name": "legacy"}}, "tags": ["k3s-agent"]}), pve)
    out = await drv.converge()
    assert out.error is None
    assert drv.obj["status"]["vmid"] == 105 and drv.obj["status"]["adopted"] is True
    assert vm.config["cores"] == 4 and vm.config["name"] == "legacy"
    assert vm.tags == {"old", "k3sdeploy-adoptable", "k3s-agent"}  # no ownership tag on an adopted VM
    assert drv.obj["status"]["deletionPolicy"] == "Retain"
    assert pve.calls["power"] == 0


async def test_adopt_ambiguous_or_missing_stalls_with_candidates() -> None:
    pve = FakeProxmox()
    pve.add_vm(101, tags="k3s")
    pve.add_vm(102, "pve2", tags="k3s")
    drv = Driver(body({"source": {"existing": {"tags": ["k3s"]}}}), pve)
    out = await drv.converge()
    stalled = drv.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "AmbiguousVM"
    assert "pve1/101" in stalled["message"] and "pve2/102" in stalled["message"]
    assert out.requeue_after is None  # permanent: no retry storm
    drv.bump(source={"existing": {"vmid": 777}})
    await drv.converge()
    stalled = drv.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "VMNotFound"


async def test_missing_template_and_secret_and_privilege() -> None:
    pve = FakeProxmox()
    drv = Driver(body(clone_spec()), pve)
    await drv.converge()
    assert (drv.condition("Stalled") or {}).get("reason") == "TemplateNotFound"
    ready = drv.condition("Ready")
    assert ready is not None and ready["status"] == "False"
    drv.kube.secrets.clear()
    await drv.once()
    stalled = drv.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "SecretNotFound" and "tokenId" in stalled["message"]
    drv.kube.secrets[("ns", "pve")] = {"url": b"https://x:8006", "tokenId": b"nobang", "tokenSecret": b"x"}
    await drv.once()
    assert (drv.condition("Stalled") or {}).get("reason") == "SecretInvalid"
    assert "x" not in (drv.condition("Stalled") or {}).get("message", "").replace("tokenId", "").split("'")[0]
    pve2 = pve_with_template()
    drv2 = Driver(body(clone_spec()), pve2)
    pve2.fail["clone"] = ProxmoxPermissionDenied("Permission check failed (/vms/100, VM.Allocate)")
    out = await drv2.converge()
    assert (drv2.condition("Stalled") or {}).get("reason") == "ProxmoxPermissionDenied"
    assert [e.reason for e in out.events] == ["ProxmoxPermissionDenied"]


async def test_transient_fault_backs_off_then_converges() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    pve.fail["cluster_vms"] = ProxmoxUnavailable("503 Service Unavailable")
    out = await drv.once()
    assert out.requeue_after == 5.0
    assert (drv.condition("Reconciling") or {}).get("reason") == "ProxmoxUnavailable"
    assert drv.condition("Stalled") is None
    pve.fail["cluster_vms"] = ProxmoxUnavailable("timeout")
    assert (await drv.once()).requeue_after == 10.0
    out = await drv.converge()
    assert (drv.condition("Ready") or {}).get("status") == "True"


async def test_disk_shrink_refused_and_bad_ssh_key() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    await drv.converge()
    drv.bump(resources={"diskGiB": 4})
    await drv.converge()
    stalled = drv.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "DiskShrinkRefused"
    assert pve.vms[100].config["scsi0"].endswith("size=16G")
    bad = "ssh-ed25519 AAAAinvalid user"
    drv.bump(resources={"diskGiB": 16}, cloudInit={"sshAuthorizedKeys": [bad]})
    await drv.converge()
    assert (drv.condition("Stalled") or {}).get("reason") == "ProxmoxRejected"


async def test_vmid_race_lost_is_retried() -> None:
    pve = pve_with_template()
    pve.nextid_override = 100  # nextid answered 100 to two clients; the other one won ...
    # ... after our list was read, so only the clone tells
    pve.fail["clone"] = ProxmoxBusy("unable to create VM 100: config file already exists", reason="VmidTaken")
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    out = await drv.once()
    assert out.error is None
    assert pve.calls["clone"] == 2
    assert drv.obj["status"]["vmid"] == 101
    pve.nextid_override = None
    await drv.converge()
    assert pve.vms[101].config["name"] == "vm-a"


async def test_crash_between_checkpoint_and_clone_reuses_the_id() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    pve.fail["clone"] = ProxmoxUnavailable("connection reset")  # the "crash": clone never reached PVE
    await drv.once()
    assert drv.obj["status"]["vmid"] == 100 and 100 not in pve.vms
    await drv.converge()
    assert sorted(pve.vms) == [100, 9000]


async def test_crash_after_clone_before_task_recorded_no_duplicate() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    await drv.once()
    # the operator died before writing taskRef: only the checkpoint (vmid 100) reached the apiserver
    drv.obj["status"] = drv.checkpoints[-1]
    fresh = Driver(drv.obj, pve)
    await fresh.converge()
    assert sorted(pve.vms) == [100, 9000] and pve.calls["clone"] == 1
    assert "k3sdeploy-0a1b2c3d11112222" in pve.vms[100].tags


async def test_status_lost_finds_tagged_vm_again() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    await drv.converge()
    drv.obj["status"] = {}
    again = Driver(drv.obj, pve)
    await again.converge()
    assert sorted(pve.vms) == [100, 9000]
    assert "Reclaimed" in [e.reason for o in again.outcomes for e in o.events]


async def test_power_cycle_restart_and_drift() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    await drv.once()
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    drv.bump(powerState="Stopped")
    await drv.converge()
    assert pve.vms[100].status == "stopped" and pve.calls["power:shutdown"] == 1
    assert drv.obj["status"]["addresses"] == [] and (drv.condition("Ready") or {}).get("status") == "True"
    drv.bump(powerState="Running")
    await drv.converge()
    assert pve.vms[100].status == "running"
    # drift: stopped outside the operator -> started again at the next resync
    pve.vms[100].status = "stopped"
    await drv.converge()
    assert pve.vms[100].status == "running" and pve.calls["power:start"] == 3
    # drift: memory changed outside -> put back, reported as pending on the running VM
    pve.vms[100].config["memory"] = 1024
    await drv.converge()
    assert pve.vms[100].pending == {"memory": 2048}
    pending = drv.condition("PendingChanges")
    assert pending is not None and "memory" in pending["message"]
    # restart on request applies it
    drv.obj["metadata"]["annotations"]["k3sdeploy.io/restart"] = "now"
    await drv.converge()
    assert pve.calls["power:reboot"] == 1 and pve.vms[100].config["memory"] == 2048
    assert drv.obj["metadata"]["annotations"]["k3sdeploy.io/restart-handled"] == "now"
    assert drv.condition("PendingChanges") is None
    await drv.converge()
    assert pve.calls["power:reboot"] == 1  # handled once


async def test_agent_silent_is_reported_with_bounded_wait() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec(guestAgent={"timeoutSeconds": 10})), pve)
    out = await drv.converge()
    agent = drv.condition("AgentReady")
    assert agent is not None and agent["reason"] == "AgentNotResponding"
    assert out.requeue_after is None
    assert (drv.condition("Ready") or {}).get("status") == "False"


async def test_failed_task_surfaces_exit_status() -> None:
    pve = pve_with_template()
    pve.fail_task["qmclone"] = "clone failed: storage 'local-lvm' is full"
    drv = Driver(body(clone_spec(powerState="Stopped")), pve)
    await drv.converge()
    stalled = drv.condition("Stalled")
    assert stalled is not None and "storage 'local-lvm' is full" in stalled["message"]
    assert drv.obj["status"].get("vmid") is None


async def test_vm_deleted_outside_is_cloned_again_with_fresh_addresses() -> None:
    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    await drv.once()
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert drv.obj["status"]["addresses"] == ["127.0.10.5"]
    # destroyed outside the operator: the next pass clones a new VM, which boots with another address
    del pve.vms[100]
    await drv.once()
    assert drv.obj["status"]["addresses"] == [], "addresses of a VM that is gone are not kept"
    new_vmid = drv.obj["status"]["vmid"]
    assert new_vmid is not None
    pve.finish_tasks()
    pve.vms[new_vmid].agent_interfaces = [
        GuestInterface("lo", "00:00:00:00:00:00", ("127.0.0.1",)),
        GuestInterface("eth0", "bc:24:11:00:00:02", ("127.0.10.9",)),
    ]
    await drv.converge()
    assert drv.obj["status"]["addresses"] == ["127.0.10.9"]
    assert (drv.condition("AgentReady") or {}).get("status") == "True"


def lose_clone_replies(pve: FakeProxmox) -> None:
    """Proxmox clones, but the reply never reaches the client (a 504 from a proxy, a timeout)."""
    real_clone = pve.clone

    async def clone(*args: Any, **kwargs: Any) -> str:
        await real_clone(*args, **kwargs)
        raise ProxmoxUnavailable("504 Gateway Timeout")

    pve.clone = clone  # type: ignore[method-assign]


async def test_lost_clone_reply_with_lost_status_is_reclaimed_not_cloned_twice() -> None:
    pve = pve_with_template()
    lose_clone_replies(pve)
    drv = Driver(body(clone_spec()), pve)
    await drv.once()
    assert sorted(pve.vms) == [100, 9000]
    drv.obj["status"]["vmid"] = None  # the recorded id is lost too (status wiped, restored from backup)
    pve.finish_tasks()
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert sorted(pve.vms) == [100, 9000], "no twin of the first clone"
    assert drv.obj["status"]["vmid"] == 100
    assert "Reclaimed" in [e.reason for o in drv.outcomes for e in o.events]


async def test_lost_clone_reply_while_the_clone_is_still_locked_is_reclaimed() -> None:
    pve = pve_with_template()
    lose_clone_replies(pve)
    drv = Driver(body(clone_spec()), pve)
    await drv.once()
    await drv.once()  # the clone is still running (locked): found under its recorded id, not re-made
    assert sorted(pve.vms) == [100, 9000]
    pve.finish_tasks()
    pve.vms[100].agent_interfaces = AGENT
    await drv.converge()
    assert sorted(pve.vms) == [100, 9000] and drv.obj["status"]["vmid"] == 100


async def test_sibling_vm_under_a_recorded_vmid_is_not_taken() -> None:
    """Children of one K3sCluster share the cluster's tag: a recorded vmid now holding a sibling's VM
    (our clone failed and Proxmox gave the id to the sibling) is not ours; we clone our own."""
    cluster_uid = "c1c2c3c4-0000-0000-0000-000000000000"
    pve = pve_with_template()
    sibling = pve.add_vm(100, "pve1", name="c-server-0", tags="k3sdeploy-c1c2c3c400000000;tpl")
    sibling.config["description"] = "k3sdeploy-owner=11111111-2222-3333-4444-555555555555"
    obj = body(clone_spec(), name="c-agent-0")
    obj["metadata"]["ownerReferences"] = [cluster_owner_ref("c", cluster_uid)]
    obj["status"] = {"vmid": 100, "node": "pve1"}  # recorded before our clone, which then failed
    drv = Driver(obj, pve)
    drv.kube.objects[("k3sclusters", "ns", "c")] = {"metadata": {"name": "c", "uid": cluster_uid}}
    await drv.once()
    pve.finish_tasks()
    for vm in pve.vms.values():
        if vm.vmid != 9000:
            vm.agent_interfaces = AGENT
    await drv.converge()
    mine = drv.obj["status"]["vmid"]
    assert mine not in (100, 9000) and pve.vms[mine].config["name"] == "c-agent-0"
    assert sibling.config["name"] == "c-server-0" and pve.calls["power:reboot"] == 0
    assert "k3sdeploy-c1c2c3c400000000" in pve.vms[mine].tags


async def test_allocation_skips_ids_reserved_by_us_and_ids_taken_in_proxmox() -> None:
    from types import SimpleNamespace

    from k3s_deploy.services.proxmoxvm.provision import _allocate

    pve = pve_with_template()
    pve.add_vm(101, name="billing-db")
    session = SimpleNamespace(client=pve, vmids=VmidAllocator(pve, reserved={100, 102}))
    work = SimpleNamespace(session=session)
    assert await _allocate(work, None, set(pve.vms)) == 103  # type: ignore[arg-type]  # only .session is used


async def test_a_pass_never_mutates_the_model_it_was_given() -> None:
    """The handler reuses a validated model while the object is unchanged: a pass must leave it as it was."""
    from k3s_deploy.api.proxmoxvm import ProxmoxVM

    pve = pve_with_template()
    drv = Driver(body(clone_spec()), pve)
    await drv.once()
    pve.vms[100].agent_interfaces = AGENT
    pve.finish_tasks()
    for _ in range(6):
        model = ProxmoxVM.model_validate(drv.obj)
        before = model.model_dump(mode="json")
        out = await reconcile(
            model, kube=drv.kube, sessions=drv.sessions, memory=drv.memory, checkpoint=drv._checkpoint
        )
        assert model.model_dump(mode="json") == before
        drv.obj["status"] = out.status
        pve.finish_tasks()
    assert drv.obj["status"]["addresses"] == ["127.0.10.5"]  # the passes did change the status they wrote


async def test_siblings_allocating_together_get_different_ids() -> None:
    """First passes that start at the same moment must not all pick the same "next free id"."""
    import asyncio
    from types import SimpleNamespace

    from k3s_deploy.services.proxmoxvm.provision import _allocate

    pve = pve_with_template()
    session = SimpleNamespace(client=pve, vmids=VmidAllocator(pve))
    work = SimpleNamespace(session=session)
    ids = await asyncio.gather(*(_allocate(work, None, set(pve.vms)) for _ in range(13)))  # type: ignore[arg-type]  # only .session is used
    assert sorted(ids) == list(range(100, 113))


async def test_a_chosen_vmid_is_reserved_before_the_clone_so_siblings_skip_it() -> None:
    """``spec.vmid`` (or a recorded id) is held from the moment it is chosen, like a free id is."""
    import asyncio
    from types import SimpleNamespace

    from k3s_deploy.services.proxmoxvm.provision import _allocate

    pve = pve_with_template()
    session = SimpleNamespace(client=pve, vmids=VmidAllocator(pve))
    work: Any = SimpleNamespace(session=session)  # _allocate uses only .session
    taken = set(pve.vms)
    chosen, *free = await asyncio.gather(
        _allocate(work, 100, taken), _allocate(work, None, taken), _allocate(work, None, taken)
    )
    assert chosen == 100 and sorted(free) == [101, 102]
    assert session.vmids.reserved == {100, 101, 102}
