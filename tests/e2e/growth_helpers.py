"""Waiting on a K3sCluster after a spec change, and reading its nodes from the workload cluster
(shared by the server-growth and agent-pool scenarios)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .conftest import Lab

ETCD_ROLE = "node-role.kubernetes.io/etcd"


def patch(lab: Lab, name: str, spec: dict[str, Any]) -> None:
    lab.kubectl(
        "patch", "k3sc", name, "-n", lab.namespace, "--type", "merge", "-p", json.dumps({"spec": spec})
    )


def settled(
    lab: Lab, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 300.0
) -> dict[str, Any]:
    """The cluster once it acted on its latest generation, is Ready, and ``check`` holds on it."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = lab.get("k3sc", name) or {}
        status = last.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        current = status.get("observedGeneration") == last.get("metadata", {}).get("generation")
        if current and ready.get("status") == "True" and check(last):
            return last
        time.sleep(1.0)
    raise AssertionError(f"{name} did not settle: {json.dumps(last.get('status'), indent=1)[:3000]}")


def nodes(lab: Lab, name: str) -> dict[str, dict[str, Any]]:
    """The workload cluster's Nodes by name, through the kubeconfig Secret."""
    items = json.loads(lab.target_kubectl(name, "get", "nodes", "-o", "json"))["items"]
    return {n["metadata"]["name"]: n for n in items}


def ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])


def wait_nodes(
    lab: Lab, name: str, check: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 120.0
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        found = nodes(lab, name)
        if check(found):
            return found
        time.sleep(1.0)
    summary = {n: (v["metadata"].get("labels"), v["spec"].get("taints")) for n, v in found.items()}
    raise AssertionError(f"nodes of {name} never as expected: {summary}")
