"""``GET /nodes/{node}/tasks`` as PVE's node_tasks answers it: what one call per node can tell a poller."""

from __future__ import annotations

import time

from fixtures.pve import PveSim

from .helpers import raw

LISTED = {"upid", "node", "pid", "pstart", "starttime", "type", "id", "user", "status"}


def test_running_and_finished_tasks_in_one_list(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    done = api.nodes("pve1").qemu(100).config.post(description="a")
    pve_sim.wait_task(done)
    pve_sim.set_timing(tasks={"qmclone": 3000})  # x0.01: 30 s, still running while we look
    running = api.nodes("pve1").qemu(9001).clone.post(newid=700, name="tl")
    by_upid = {t["upid"]: t for t in api.nodes("pve1").tasks.get(source="all")}
    entry = by_upid[running]
    # a running task: status RUNNING, no endtime, and the list never has an exitstatus key
    assert set(entry) >= LISTED and entry["status"] == "RUNNING" and "endtime" not in entry
    assert entry["type"] == "qmclone" and entry["id"] == "9001" and entry["node"] == "pve1"
    finished = by_upid[done]
    assert finished["status"] == "OK" and finished["endtime"] >= finished["starttime"]
    assert not any("exitstatus" in t for t in by_upid.values())
    # running tasks come first; the default source is the archive (finished tasks only)
    assert next(iter(by_upid)) == running
    archive = [t["upid"] for t in api.nodes("pve1").tasks.get()]
    assert done in archive and running not in archive
    active = [t["upid"] for t in api.nodes("pve1").tasks.get(source="active")]
    assert active == [running]


def test_since_filters_on_the_start_time_even_for_running_tasks(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.set_timing(tasks={"qmclone": 3000})
    old = api.nodes("pve1").qemu(9001).clone.post(newid=701, name="old")
    time.sleep(1.1)  # starttime has whole seconds
    later = int(time.time())
    new = api.nodes("pve1").qemu(100).config.post(description="b")
    listed = [t["upid"] for t in api.nodes("pve1").tasks.get(source="all", since=later)]
    assert new in listed and old not in listed
    assert old in [t["upid"] for t in api.nodes("pve1").tasks.get(source="all", since=later - 5)]


def test_limit_defaults_to_50_and_total_counts_every_match(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    for i in range(55):
        api.nodes("pve1").qemu(100).config.post(description=f"n{i}")
    page = raw(pve_sim, "GET", "/nodes/pve1/tasks", params={"source": "all"}).json()
    assert len(page["data"]) == 50 and page["total"] >= 55
    second = raw(pve_sim, "GET", "/nodes/pve1/tasks", params={"source": "all", "start": 50}).json()
    assert {t["upid"] for t in second["data"]}.isdisjoint(t["upid"] for t in page["data"])


def test_status_filters(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    ok = api.nodes("pve1").qemu(100).config.post(description="c")
    failed = api.nodes("pve1").qemu(9001).status.start.post()  # a template cannot start
    for upid in (ok, failed):
        pve_sim.wait_task(upid)
    errors = [t["upid"] for t in api.nodes("pve1").tasks.get(errors=1)]
    assert failed in errors and ok not in errors
    only_ok = [t["upid"] for t in api.nodes("pve1").tasks.get(statusfilter="ok")]
    assert ok in only_ok and failed not in only_ok
    resp = raw(pve_sim, "GET", "/nodes/pve1/tasks", params={"statusfilter": "done"})
    assert resp.status_code == 400 and "statusfilter" in resp.json()["errors"]
