"""Clean teardown end to end: deleting a cluster whose VMs are retained uninstalls K3s from them
(spec.teardown: Uninstall, the default); with Leave, K3s stays installed."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import requests

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

K3S_FILES = "for f in /usr/local/bin/k3s /usr/local/bin/k3s-uninstall.sh /etc/systemd/system/k3s.service; do test -e $f && echo $f; done; true"


def _retained(lab: Lab, name: str, teardown: str | None) -> dict[str, Any]:
    manifest = lab.cluster(name, servers=1, agents=0)
    manifest["spec"]["servers"]["template"]["deletionPolicy"] = "Retain"
    if teardown:
        manifest["spec"]["teardown"] = teardown
    return manifest


def test_deleting_a_retained_cluster_uninstalls_k3s_unless_told_to_leave_it(lab: Lab) -> None:
    lab.apply(_retained(lab, "gone", None), _retained(lab, "kept", "Leave"))
    lab.wait_ready("gone", timeout=300)
    lab.wait_ready("kept", timeout=300)
    nodes = {name: (lab.get("k3sc", name) or {})["status"]["nodes"][0] for name in ("gone", "kept")}
    for node in nodes.values():
        assert "/usr/local/bin/k3s" in asyncio.run(lab.ssh(node["ip"], K3S_FILES))

    started = time.monotonic()
    lab.kubectl("delete", "k3sc", "gone", "kept", "-n", lab.namespace, "--timeout=120s")
    print(f"both clusters deleted after {time.monotonic() - started:.1f}s")
    assert lab.get("pvm", "gone-server-0") is None and lab.get("pvm", "kept-server-0") is None
    vms = lab.vms()
    assert nodes["gone"]["vmid"] in vms and nodes["kept"]["vmid"] in vms, "Retain keeps both VMs"
    # Uninstall (default): K3s is gone from the guest and the stand-in no longer runs it
    assert asyncio.run(lab.ssh(nodes["gone"]["ip"], K3S_FILES)).split() == []
    # Leave: still installed
    left = asyncio.run(lab.ssh(nodes["kept"]["ip"], K3S_FILES)).split()
    assert "/usr/local/bin/k3s" in left and "/usr/local/bin/k3s-uninstall.sh" in left
    events = lab.get("events") or {"items": []}
    uninstalled = [
        e
        for e in events["items"]
        if e.get("reason") == "Uninstalled" and e["involvedObject"].get("name") == "gone"
    ]
    assert uninstalled and "gone-server-0" in uninstalled[0]["message"]
    assert not [
        e
        for e in events["items"]
        if e.get("reason") in ("Uninstalled", "UninstallSkipped")
        and e["involvedObject"].get("name") == "kept"
    ]


def test_an_unreachable_retained_vm_does_not_block_the_deletion(lab: Lab) -> None:
    lab.apply(_retained(lab, "lost", None))
    lab.wait_ready("lost", timeout=300)
    node = (lab.get("k3sc", "lost") or {})["status"]["nodes"][0]
    # every SSH session that runs an uninstall script is cut off: no uninstall ever reports back
    base = lab.pve["k3sInstallUrl"].split("/k3s/")[0]
    body = {"sshDrop": {"rate": 1.0, "minDelay": 0, "maxDelay": 0, "match": "uninstall.sh"}}
    answer = requests.put(f"{base}/lab/v1/chaos", data=json.dumps(body), timeout=10)
    assert answer.json()["sshDrop"]["rate"] == 1.0
    started = time.monotonic()
    lab.kubectl("delete", "k3sc", "lost", "-n", lab.namespace, "--timeout=120s")
    took = time.monotonic() - started
    print(f"deleted with an unreachable VM after {took:.1f}s")
    assert took < 90
    assert node["vmid"] in lab.vms()
    skipped = [
        e
        for e in (lab.get("events") or {"items": []})["items"]
        if e.get("reason") == "UninstallSkipped" and e["involvedObject"].get("name") == "lost"
    ]
    assert skipped and skipped[0]["type"] == "Warning" and "k3s-uninstall.sh" in skipped[0]["message"]
