"""etcd snapshots and restore end to end: the operator process against the lab (3 servers with real
embedded etcd in the stand-in). The schedule and retention reach every server's K3s configuration, an
annotation takes a snapshot that status.etcdSnapshots lists, and a restore requested in the spec brings
the workload cluster back to the snapshot's state (a ConfigMap deleted after it is back, one created
after it is gone) and to Ready. Prints the time from the restore request to Ready."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from k3s_deploy.services.k3scluster.snapshots import CONFIG_FILE, SNAPSHOT_REQUEST

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
NAME = "snap"


def _until(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _configmaps(lab: Lab) -> set[str]:
    out = lab.target_kubectl(NAME, "get", "configmaps", "-n", "default", "-o", "name")
    return set(out.split())


def test_snapshot_then_restore_returns_to_the_old_state(lab: Lab) -> None:
    snapshots = {"scheduleCron": "0 3 * * *", "retention": 3}
    lab.apply(lab.cluster(NAME, servers=3, agents=1, extra_spec={"etcdSnapshots": snapshots}))
    status = lab.wait_ready(NAME, timeout=420)["status"]
    servers = [n for n in status["nodes"] if n["role"] == "server"]
    assert len(servers) == 3
    for node in servers:  # the schedule and retention are the servers' K3s configuration, mode 0600
        text = asyncio.run(lab.ssh(node["ip"], f"sudo cat {CONFIG_FILE}; sudo stat -c %a {CONFIG_FILE}"))
        assert 'etcd-snapshot-schedule-cron: "0 3 * * *"' in text, text
        assert "etcd-snapshot-retention: 3" in text, text
        assert text.strip().endswith("600"), text

    lab.target_kubectl(NAME, "create", "configmap", "keep-me", "-n", "default", "--from-literal=a=1")
    lab.kubectl("annotate", "k3sc", NAME, "-n", lab.namespace, f"{SNAPSHOT_REQUEST}=before-change")

    def snapshot_listed() -> dict[str, Any] | None:
        listed = ((lab.get("k3sc", NAME) or {}).get("status") or {}).get("etcdSnapshots") or []
        return next((s for s in listed if s["name"].startswith("before-change-")), None)

    snap = _until(snapshot_listed, 120, "the on-demand snapshot in status.etcdSnapshots")
    assert snap["node"] == status["initServer"]
    assert snap["location"].startswith("file:///var/lib/rancher/k3s/server/db/snapshots/before-change-")
    assert snap["size"] > 1000 and snap["createdTime"]
    assert lab.events(NAME, "SnapshotTaken")
    assert (lab.get("k3sc", NAME) or {})["status"]["snapshotRequest"] == "before-change"

    lab.target_kubectl(NAME, "delete", "configmap", "keep-me", "-n", "default")
    lab.target_kubectl(NAME, "create", "configmap", "made-later", "-n", "default")
    assert "configmap/keep-me" not in _configmaps(lab)

    restore = {"name": snap["name"], "requestId": "r1"}
    started = time.monotonic()
    patch = {"spec": {"etcdSnapshots": {**snapshots, "restore": restore}}}
    lab.kubectl("patch", "k3sc", NAME, "-n", lab.namespace, "--type", "merge", "-p", json.dumps(patch))

    def restored() -> bool:
        st = (lab.get("k3sc", NAME) or {}).get("status") or {}
        ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
        step = (st.get("etcdRestore") or {}).get("step")
        assert step != "Failed", st.get("etcdRestore")
        return step == "Complete" and ready.get("status") == "True"

    _until(restored, 420, "the restore to complete and the cluster to be Ready")
    took = time.monotonic() - started
    print(f"\nrestore request -> Ready: {took:.1f} s (3 servers, 1 agent)", flush=True)

    names = _configmaps(lab)
    assert "configmap/keep-me" in names  # in the snapshot: back
    assert "configmap/made-later" not in names  # made after it: gone
    final = (lab.get("k3sc", NAME) or {})["status"]
    assert final["etcdRestore"]["requestId"] == "r1"
    assert sorted(final["etcdRestore"]["rejoined"]) == sorted(
        n["name"] for n in servers if n["name"] != final["initServer"]
    )
    for reason in ("RestoreRequested", "ServersStopped", "ClusterReset", "ServerRejoined", "RestoreComplete"):
        assert lab.events(NAME, reason), reason
    nodes = json.loads(lab.target_kubectl(NAME, "get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 4

    # once per requestId: a later pass (a spec edit, a new generation) does not restore again
    poke = {"spec": {"upgrade": {"nodeReadyTimeoutSeconds": 601}}}
    lab.kubectl("patch", "k3sc", NAME, "-n", lab.namespace, "--type", "merge", "-p", json.dumps(poke))
    generation = (lab.get("k3sc", NAME) or {})["metadata"]["generation"]
    _until(
        lambda: ((lab.get("k3sc", NAME) or {}).get("status") or {}).get("observedGeneration") == generation,
        60,
        "the pass of the spec edit",
    )
    lab.wait_ready(NAME, timeout=60)
    assert len(lab.events(NAME, "ClusterReset")) == 1
    assert "configmap/keep-me" in _configmaps(lab)
