"""Growing a one-server cluster to three and five servers and back, end to end: the single server starts on
K3s's SQLite datastore, is converted to embedded etcd (a config.yaml.d drop-in and a restart, no
reinstall) when servers are added, and servers leave one at a time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from .conftest import Lab
from .growth_helpers import ETCD_ROLE, nodes, patch, ready, settled

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DROP_IN = "/etc/rancher/k3s/config.yaml.d/00-k3s-deploy-embedded-etcd.yaml"


def servers_ready(n: int) -> Any:
    return lambda c: c["status"].get("readyServers") == n and len(c["status"].get("nodes") or []) == n


def installs_of(lab: Lab, name: str, member: str) -> int:
    """How many times the operator installed K3s on ``member`` (Installing Events, counted)."""
    return sum(
        int(e.get("count") or 1) for e in lab.events(name, "Installing") if f"on {member} " in e["message"]
    )


def gone(lab: Lab, *names: str, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(lab.get("pvm", n) is None for n in names):
            return True
        time.sleep(1.0)
    return False


def etcd_servers(lab: Lab, name: str, count: int) -> None:
    """``count`` Nodes, every one a Ready server with the etcd role (an etcd member)."""
    found = nodes(lab, name)
    assert sorted(found) == [f"{name}-server-{i}" for i in range(count)]
    assert all(ready(n) and n["metadata"]["labels"].get(ETCD_ROLE) == "true" for n in found.values())


def test_one_server_grows_to_three_then_five_and_back_to_one(lab: Lab) -> None:
    lab.apply(lab.cluster("grow", servers=1, agents=0))
    st = settled(lab, "grow", servers_ready(1))["status"]
    first = st["nodes"][0]
    assert first["name"] == "grow-server-0"
    found = nodes(lab, "grow")
    assert ETCD_ROLE not in found["grow-server-0"]["metadata"]["labels"]  # SQLite: no etcd role yet

    patch(lab, "grow", {"servers": {"replicas": 3}})
    st = settled(lab, "grow", servers_ready(3), timeout=420)["status"]
    etcd_servers(lab, "grow", 3)
    # the first server was converted in place: same VM, one install, the drop-in on its disk
    assert next(n for n in st["nodes"] if n["name"] == "grow-server-0")["vmid"] == first["vmid"]
    assert installs_of(lab, "grow", "grow-server-0") == 1
    assert lab.events("grow", "ConvertedToEmbeddedEtcd"), "the conversion is reported"
    drop_in = asyncio.run(lab.ssh(first["ip"], f"cat {DROP_IN}"))
    assert drop_in.strip() == "cluster-init: true"

    patch(lab, "grow", {"servers": {"replicas": 5}})
    settled(lab, "grow", servers_ready(5), timeout=420)
    etcd_servers(lab, "grow", 5)

    patch(lab, "grow", {"servers": {"replicas": 1}})
    settled(lab, "grow", servers_ready(1), timeout=600)
    etcd_servers(lab, "grow", 1)
    assert gone(lab, *(f"grow-server-{i}" for i in range(1, 5)))
    removed = [e["message"] for e in lab.events("grow", "NodeDeleted")]
    assert all(any(f"grow-server-{i}" in m for m in removed) for i in range(1, 5))
    assert installs_of(lab, "grow", "grow-server-0") == 1
    assert len(lab.events("grow", "ConvertedToEmbeddedEtcd")) == 1
