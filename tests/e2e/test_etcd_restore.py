"""etcd snapshots and restore end to end: the operator process against the lab (3 servers with real
embedded etcd in the stand-in). The schedule and retention reach every server's K3s configuration, an
annotation takes a snapshot that status.etcdSnapshots lists, and a restore requested in the spec brings
the workload cluster back to the snapshot's state (a ConfigMap deleted after it is back, one created
after it is gone) and to Ready. Prints the time from the restore request to Ready. A second test kills
the operator in the middle of a restore: the new process goes on at the recorded step."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from k3s_deploy.services.k3scluster.snapshots import CONFIG_FILE, SNAPSHOT_REQUEST

from .conftest import Lab
from .test_k3scluster_crash import _until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NAME = "snap"


def _configmaps(lab: Lab) -> set[str]:
    out = lab.target_kubectl(NAME, "get", "configmaps", "-n", "default", "-o", "name")
    return set(out.split())


SCHEDULE = {"scheduleCron": "0 3 * * *", "retention": 3}
ON_DISK = "file:///var/lib/rancher/k3s/server/db/snapshots/"


def _status(lab: Lab) -> dict[str, Any]:
    return dict((lab.get("k3sc", NAME) or {}).get("status") or {})


def _snapshot_then_change(lab: Lab, agents: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Ready cluster, a ConfigMap, a snapshot by annotation, then the ConfigMap deleted and another
    made: returns (the cluster's status, the snapshot as status.etcdSnapshots lists it)."""
    lab.apply(lab.cluster(NAME, servers=3, agents=agents, extra_spec={"etcdSnapshots": SCHEDULE}))
    status = lab.wait_ready(NAME, timeout=420)["status"]
    lab.target_kubectl(NAME, "create", "configmap", "keep-me", "-n", "default", "--from-literal=a=1")
    lab.kubectl("annotate", "k3sc", NAME, "-n", lab.namespace, f"{SNAPSHOT_REQUEST}=before-change")

    def snapshot_listed() -> dict[str, Any] | None:
        listed = _status(lab).get("etcdSnapshots") or []
        return next((s for s in listed if s["name"].startswith("before-change-")), None)

    snap: dict[str, Any] = _until(snapshot_listed, 120, "the on-demand snapshot in status.etcdSnapshots")
    lab.target_kubectl(NAME, "delete", "configmap", "keep-me", "-n", "default")
    lab.target_kubectl(NAME, "create", "configmap", "made-later", "-n", "default")
    assert "configmap/keep-me" not in _configmaps(lab)
    return status, snap


def _request_restore(lab: Lab, name: str, request_id: str) -> None:
    patch = {"spec": {"etcdSnapshots": {**SCHEDULE, "restore": {"name": name, "requestId": request_id}}}}
    lab.kubectl("patch", "k3sc", NAME, "-n", lab.namespace, "--type", "merge", "-p", json.dumps(patch))


def _restored(lab: Lab) -> bool:
    st = _status(lab)
    ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
    step = (st.get("etcdRestore") or {}).get("step")
    assert step != "Failed", st.get("etcdRestore")
    return step == "Complete" and ready.get("status") == "True"


def _old_state_is_back(lab: Lab) -> None:
    names = _configmaps(lab)
    assert "configmap/keep-me" in names  # in the snapshot: back
    assert "configmap/made-later" not in names  # made after it: gone


def test_snapshot_then_restore_returns_to_the_old_state(lab: Lab) -> None:
    status, snap = _snapshot_then_change(lab, agents=1)
    servers = [n for n in status["nodes"] if n["role"] == "server"]
    assert len(servers) == 3
    for node in servers:  # the schedule and retention are the servers' K3s configuration, mode 0600
        text = asyncio.run(lab.ssh(node["ip"], f"sudo cat {CONFIG_FILE}; sudo stat -c %a {CONFIG_FILE}"))
        assert 'etcd-snapshot-schedule-cron: "0 3 * * *"' in text, text
        assert "etcd-snapshot-retention: 3" in text, text
        assert text.strip().endswith("600"), text
    assert snap["node"] == status["initServer"]
    assert snap["location"] == ON_DISK + snap["name"]
    assert snap["size"] > 1000 and snap["createdTime"]
    assert lab.events(NAME, "SnapshotTaken")
    assert _status(lab)["snapshotRequest"] == "before-change"

    started = time.monotonic()
    _request_restore(lab, snap["name"], "r1")
    _until(lambda: _restored(lab), 420, "the restore to complete and the cluster to be Ready")
    took = time.monotonic() - started
    print(f"\nrestore request -> Ready: {took:.1f} s (3 servers, 1 agent)", flush=True)

    _old_state_is_back(lab)
    final = _status(lab)
    assert final["etcdRestore"]["requestId"] == "r1"
    assert sorted(final["etcdRestore"]["rejoined"]) == sorted(
        n["name"] for n in servers if n["name"] != final["initServer"]
    )
    for reason in ("RestoreRequested", "ServersStopped", "ClusterReset", "ServerRejoined", "RestoreComplete"):
        assert lab.events(NAME, reason), reason
    assert len(lab.events(NAME, "ClusterReset")) == 1
    nodes = json.loads(lab.target_kubectl(NAME, "get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 4

    # once per requestId: a later pass (a spec edit, a new generation) does not restore again
    poke = {"spec": {"upgrade": {"nodeReadyTimeoutSeconds": 601}}}
    lab.kubectl("patch", "k3sc", NAME, "-n", lab.namespace, "--type", "merge", "-p", json.dumps(poke))
    generation = (lab.get("k3sc", NAME) or {})["metadata"]["generation"]
    _until(lambda: _status(lab).get("observedGeneration") == generation, 60, "the pass of the spec edit")
    lab.wait_ready(NAME, timeout=60)
    assert len(lab.events(NAME, "ClusterReset")) == 1
    _old_state_is_back(lab)


def test_operator_killed_mid_restore_goes_on_at_the_recorded_step(lab: Lab) -> None:
    _status_before, snap = _snapshot_then_change(lab, agents=0)
    _request_restore(lab, snap["name"], "crash-1")

    def mid_restore() -> str | None:
        step = (_status(lab).get("etcdRestore") or {}).get("step")
        assert step != "Complete", "the restore finished before the operator could be killed mid-way"
        return step if step in ("StoppingServers", "Resetting", "StartingInit", "Rejoining") else None

    killed_at = _until(mid_restore, 120, "the restore to be under way")
    lab.operator.kill()
    lab.operator.start()
    print(f"\noperator killed and restarted at restore step {killed_at}", flush=True)
    _until(lambda: _restored(lab), 420, "the restore to complete and the cluster to be Ready")
    _old_state_is_back(lab)
    # the step under way when the operator died may run twice (each is safe to repeat), no other
    assert len(lab.events(NAME, "ClusterReset")) in (1, 2)
    assert len(lab.events(NAME, "ServersStopped")) in (1, 2)
