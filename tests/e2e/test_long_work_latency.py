"""How soon ``spec.paused: true`` and a deletion take effect while a node drains (issue 16, "long
work is recorded, not awaited"). A PodDisruptionBudget in the workload cluster refuses the eviction of
the only server's pod, so the rollout's drain waits for ``drain.timeoutSeconds``. The figures are
printed; the goal (within 5 s) is marked as not met yet: drains still run inside a pass, so the pass
sees the change only when the drain gives up.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

B = "v1.32.0+k3s1"
DRAIN_TIMEOUT = 45
GOAL_S = 5.0


def _blocking_pod(node: str) -> list[dict[str, Any]]:
    """A managed, Running and Ready pod on ``node`` and a budget that allows no disruption."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web",
                    "uid": "0c0e7f38-0000-4000-8000-000000000016",
                    "controller": True,
                }
            ],
        },
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    return [pod, pdb]


def _wait(what: str, check: Any, timeout: float) -> float:
    """Seconds until ``check()`` is true."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _cordoned(lab: Lab, name: str, node: str) -> bool:
    spec = json.loads(lab.target_kubectl(name, "get", "node", node, "-o", "json"))["spec"]
    return bool(spec.get("unschedulable"))


def _start_a_blocked_drain(lab: Lab, name: str, node: str) -> None:
    _wait("the rollout cordons the node", lambda: _cordoned(lab, name, node), 120)
    time.sleep(3.0)  # the drain is under way: its eviction was refused


def test_pause_and_deletion_latency_during_a_drain(lab: Lab) -> None:
    name, node = "drainy", "drainy-server-0"
    extra = {"upgrade": {"drain": {"timeoutSeconds": DRAIN_TIMEOUT}}}
    lab.apply(lab.cluster(name, servers=1, agents=0, extra_spec=extra))
    lab.wait_ready(name, timeout=240)
    kubeconfig = lab.kubeconfig_of(name)
    lab.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_blocking_pod(node)), kubeconfig=kubeconfig)
    running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    lab.kubectl(
        "patch", "pod", "web", "-n", "default", "--subresource=status", "--type=merge",
        "-p", json.dumps(running), kubeconfig=kubeconfig,
    )  # fmt: skip

    def patch(spec: dict[str, Any]) -> None:
        lab.kubectl(
            "patch", "k3sc", name, "-n", lab.namespace, "--type=merge", "-p", json.dumps({"spec": spec})
        )

    # 1. pause while the drain waits on the budget
    patch({"k3s": {"version": B}})
    _start_a_blocked_drain(lab, name, node)
    patch({"paused": True})
    paused_s = _wait(
        "status.phase Paused",
        lambda: (lab.get("k3sc", name) or {}).get("status", {}).get("phase") == "Paused",
        300,
    )
    # 2. resume (the failed rollout is retried for the new generation), then delete mid-drain
    lab.kubectl("uncordon", node, kubeconfig=kubeconfig)
    patch({"paused": False})
    _start_a_blocked_drain(lab, name, node)
    lab.kubectl("delete", "k3sc", name, "-n", lab.namespace, "--wait=false")
    deleted_s = _wait(
        "the children are being deleted",
        lambda: (
            bool(((lab.get("pvm", f"{name}-server-0") or {}).get("metadata") or {}).get("deletionTimestamp"))
            or lab.get("pvm", f"{name}-server-0") is None
        ),
        300,
    )
    print(
        f"\nduring a drain (drain.timeoutSeconds {DRAIN_TIMEOUT}): spec.paused took effect after "
        f"{paused_s:.1f}s, a deletion after {deleted_s:.1f}s (goal: {GOAL_S:.0f}s)",
        flush=True,
    )
    assert deleted_s <= GOAL_S, f"a deletion during a drain took {deleted_s:.1f}s to take effect"
    if paused_s > GOAL_S:  # issue 16, step 4: drains are still awaited inside a pass
        pytest.xfail(f"long work is still awaited in a pass: spec.paused took effect after {paused_s:.1f}s")
