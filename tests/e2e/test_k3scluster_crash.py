"""The operator SIGKILLed at several points of a bootstrap still ends with one K3s cluster, one init
server and no duplicate VMs (every step is idempotent and the init server is recorded before use)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_operator_killed_mid_bootstrap(lab: Lab) -> None:
    lab.apply(lab.cluster("crash", servers=3, agents=1))
    # 1: children being created
    _until(lambda: (lab.get("pvm") or {}).get("items"), 60, "the first ProxmoxVM")
    lab.operator.kill()
    lab.operator.start()
    # 2: the first K3s install has started
    _until(lambda: lab.events("crash", "Installing"), 240, "the first install")
    lab.operator.kill()
    lab.operator.start()
    # 3: a join is under way (or already done): kill once more
    _until(
        lambda: len(lab.events("crash", "Installing")) >= 2 or lab.condition("crash", "Ready"), 240, "a join"
    )
    lab.operator.kill()
    lab.operator.start()

    lab.wait_ready("crash", timeout=300)
    status = (lab.get("k3sc", "crash") or {})["status"]
    assert (status["readyServers"], status["readyAgents"]) == (3, 1)
    assert status["initServer"] == "crash-server-0"

    children = (lab.get("pvm") or {})["items"]
    assert sorted(c["metadata"]["name"] for c in children) == [
        "crash-agent-0",
        "crash-server-0",
        "crash-server-1",
        "crash-server-2",
    ]
    owner_tag = next(t for t in children[0]["spec"]["tags"] if t.startswith("k3sdeploy-"))
    tagged = [vm for vm in lab.vms().values() if owner_tag in str(vm.get("tags", "")).split(";")]
    assert len(tagged) == 4, f"duplicate or missing VMs: {[(v['vmid'], v.get('name')) for v in tagged]}"

    clusters = lab.guest_clusters().get("clusters") or {}
    assert len(clusters) == 1, f"more than one K3s cluster was initialised: {list(clusters)}"
    only = next(iter(clusters.values()))
    assert only["etcd"] is True, "3 servers need embedded etcd (--cluster-init on the first)"
    server_ips = {n["ip"] for n in status["nodes"] if n["role"] == "server"}
    assert server_ips <= set(only["sans"]), "every server address is a TLS SAN"
    assert lab.operator.starts == 4
