"""The admin endpoint: faults, latency, node offline, call counts, the guests feed, restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import requests
from proxmoxer import ResourceException

from fixtures.pve import PveSim
from integration.pvesim.helpers import eventually, raw

pytestmark = pytest.mark.integration


def test_counts_per_endpoint_and_method_with_reset(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.reset_counts()
    api.nodes("pve1").qemu(100).status.current.get()
    api.nodes("pve2").qemu(101).status.current.get()
    api.nodes("pve1").qemu(110).config.put(cores=2)
    raw(pve_sim, "GET", "/nodes/pve1/lxc")
    counts = pve_sim.counts()
    assert counts == {
        "GET /nodes/{node}/qemu/{vmid}/status/current": 2,
        "PUT /nodes/{node}/qemu/{vmid}/config": 1,
        "GET /nodes/pve1/lxc": 1,
    }
    statuses = pve_sim.admin("GET", "counts")["statuses"]
    assert statuses["GET /nodes/pve1/lxc 501"] == 1
    pve_sim.reset_counts()
    assert pve_sim.counts() == {}


def test_error_rate_is_seeded_and_repeatable(pve_sim: PveSim) -> None:
    api = pve_sim.api()

    def pattern() -> list[bool]:
        pve_sim.set_faults(seed=7, errors=[{"match": "GET /nodes/{node}/qemu/{vmid}/status/current", "rate": 0.5,
                                            "status": 500, "message": "simulated: proxy loop"}])  # fmt: skip
        out = []
        for _ in range(20):
            try:
                api.nodes("pve1").qemu(100).status.current.get()
                out.append(True)
            except ResourceException as exc:
                assert (exc.status_code, exc.content) == (500, "simulated: proxy loop")
                out.append(False)
        return out

    first = pattern()
    assert 3 < first.count(False) < 17
    assert pattern() == first
    api.version.get()  # other endpoints unaffected
    pve_sim.reset_faults()
    assert api.nodes("pve1").qemu(100).status.current.get()["status"] == "running"


def test_latency_applies_per_call(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.set_faults(latencies={"GET /version": 0.3})
    started = time.monotonic()
    api.version.get()
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    api.nodes.get()
    assert time.monotonic() - started < 0.3


def test_offline_node_answers_595(pve_sim: PveSim) -> None:
    pve_sim.node_offline("pve2")
    resp = raw(pve_sim, "GET", "/nodes/pve2/qemu/101/status/current")
    assert resp.status_code == 595
    nodes = {n["node"]: n for n in pve_sim.api().nodes.get()}
    assert nodes["pve2"]["status"] == "offline" and "maxmem" not in nodes["pve2"]
    vms = {r["vmid"]: r for r in pve_sim.api().cluster.resources.get(type="vm")}
    assert vms[101]["status"] == "unknown" and vms[100]["status"] == "running"
    with pytest.raises(ResourceException) as err:
        pve_sim.api().nodes("pve1").qemu(9000).clone.post(newid=250, target="pve2")
    assert err.value.status_code == 595
    pve_sim.node_offline("pve2", offline=False)
    assert raw(pve_sim, "GET", "/nodes/pve2/qemu/101/status/current").status_code == 200


def test_lock_contention_clears_after_its_time(pve_sim: PveSim) -> None:
    pve_sim.lock_vm(110, "backup", seconds=0.5)
    with pytest.raises(ResourceException) as err:
        pve_sim.api().nodes("pve1").qemu(110).config.put(cores=3)
    assert err.value.content == "VM is locked (backup)"
    eventually(lambda: _put_ok(pve_sim), timeout=5)


def test_lock_is_refused_while_a_clone_holds_its_lock(pve_sim: PveSim) -> None:
    """A backup lock never replaces a clone lock, so a failed clone is still rolled back (no disk-less VM)."""
    pve_sim.set_timing(tasks={"qmclone": 100.0})  # 1 s at the fixture's scale
    pve_sim.set_faults(
        taskFailures=[{"type": "qmclone", "message": "clone failed: simulated", "remaining": 1}]
    )
    api = pve_sim.api()
    upid = api.nodes("pve1").qemu(9000).clone.post(newid=260, name="half-made")
    resp = requests.post(
        f"{pve_sim.admin_url}/vms/260/lock",
        json={"lock": "backup", "seconds": 5},
        verify=pve_sim.ca,
        timeout=10,
    )
    assert resp.status_code == 409 and resp.json()["lock"] == "clone"
    assert pve_sim.wait_task(upid)["exitstatus"] == "clone failed: simulated"
    assert 260 not in {int(vm["vmid"]) for vm in api.cluster.resources.get(type="vm")}
    pve_sim.lock_vm(110, "backup", seconds=5)
    pve_sim.lock_vm(110, "backup", seconds=5)  # the same lock again is fine


def _put_ok(pve_sim: PveSim) -> bool:
    try:
        pve_sim.api().nodes("pve1").qemu(110).config.put(cores=3)
    except ResourceException:
        return False
    return True


def test_guests_long_poll_returns_on_change(pve_sim: PveSim) -> None:
    first = pve_sim.guests()
    assert {g["vmid"] for g in first["guests"]} == {100, 101, 102, 110}  # templates are not guests
    g100 = next(g for g in first["guests"] if g["vmid"] == 100)
    assert g100 | {"instanceId": None, "addresses": None} == {
        "vmid": 100, "node": "pve1", "name": "legacy-k3s-server-1", "status": "running", "agent": True,
        "agentReady": True, "addresses": None, "ciuser": "ubuntu", "sshkeys": [], "instanceId": None,
        "hostname": "legacy-k3s-server-1", "impostorSshd": False,
    }  # fmt: skip
    result: dict[str, object] = {}

    def poll() -> None:
        started = time.monotonic()
        result["body"] = pve_sim.guests(since=first["revision"], wait=20)
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    upid = pve_sim.api().nodes("pve1").qemu(110).status.start.post()
    thread.join(15)
    body = result["body"]
    assert isinstance(body, dict) and body["revision"] > first["revision"]
    assert float(result["took"]) < 10  # type: ignore[arg-type]
    pve_sim.wait_task(upid)
    eventually(lambda: next(g for g in pve_sim.guests()["guests"] if g["vmid"] == 110)["agentReady"])
    # no change: the poll waits for the given time
    current = pve_sim.guests()["revision"]
    started = time.monotonic()
    assert pve_sim.guests(since=current, wait=0.5)["revision"] == current
    assert time.monotonic() - started >= 0.45


def test_admin_needs_the_token_in_its_path(pve_sim: PveSim) -> None:
    base = pve_sim.admin_url.rsplit("/", 1)[0]
    resp = requests.get(base + "/wrong-token/guests", verify=pve_sim.ca, timeout=10)
    assert resp.status_code == 404


def test_restart_keeps_vms_tasks_and_leases(pve_sim_factory: Callable[..., PveSim]) -> None:
    sim = pve_sim_factory()
    api = sim.api()
    sim.wait_task(api.nodes("pve1").qemu(9001).clone.post(newid=260, name="keep-me"))
    sim.wait_task(api.nodes("pve1").qemu(260).status.start.post())
    guest = eventually(
        lambda: next((g for g in sim.guests()["guests"] if g["vmid"] == 260 and g["addresses"]), None)
    )
    sim.set_timing(tasks={"qmclone": 150})
    pending_upid = api.nodes("pve1").qemu(9001).clone.post(newid=261)
    time.sleep(0.3)  # let the state file catch up
    sim.stop()
    again = pve_sim_factory(sim.dir)
    api2 = again.api()
    assert again.info["tokenSecret"] == sim.info["tokenSecret"]
    assert api2.nodes("pve1").qemu(260).config.get()["name"] == "keep-me"
    after = next(g for g in again.guests()["guests"] if g["vmid"] == 260)
    assert after["addresses"] == guest["addresses"] and after["instanceId"] == guest["instanceId"]
    # the task that was running finishes after the restart
    assert again.wait_task(pending_upid, api=api2)["exitstatus"] == "OK"
    assert "lock" not in api2.nodes("pve1").qemu(261).config.get()
