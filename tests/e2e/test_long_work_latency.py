"""How soon ``spec.paused: true`` and a deletion take effect while a node drains or installs (issue 16,
"long work is recorded, not awaited"). Drain: a PodDisruptionBudget in the workload cluster refuses the
eviction of the only server's pod, so the rollout's drain cannot finish for ``drain.timeoutSeconds``.
Install: the lab's installs take ``installSeconds`` (its chaos knob), so the upgrade's installer runs
that long as a detached job on the guest. Both must take effect within 5 s; the figures are printed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
import yaml

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

B = "v1.32.0+k3s1"
DRAIN_TIMEOUT = 45
INSTALL_S = 40
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


def _patch(lab: Lab, name: str, spec: dict[str, Any]) -> None:
    lab.kubectl("patch", "k3sc", name, "-n", lab.namespace, "--type=merge", "-p", json.dumps({"spec": spec}))


def _paused_within(lab: Lab, name: str) -> float:
    def paused() -> bool:
        return bool((lab.get("k3sc", name) or {}).get("status", {}).get("phase") == "Paused")

    return _wait("status.phase Paused", paused, 300)


def _report(during: str, paused_s: float, deleted_s: float) -> None:
    print(
        f"\nduring {during}: spec.paused took effect after {paused_s:.1f}s, a deletion after "
        f"{deleted_s:.1f}s (goal: {GOAL_S:.0f}s)",
        flush=True,
    )
    assert paused_s <= GOAL_S, f"spec.paused during {during} took {paused_s:.1f}s to take effect"
    assert deleted_s <= GOAL_S, f"a deletion during {during} took {deleted_s:.1f}s to take effect"


def _deleting(lab: Lab, child: str) -> bool:
    found = lab.get("pvm", child)
    return found is None or bool((found.get("metadata") or {}).get("deletionTimestamp"))


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

    # 1. pause while the drain waits on the budget
    _patch(lab, name, {"k3s": {"version": B}})
    _start_a_blocked_drain(lab, name, node)
    _patch(lab, name, {"paused": True})
    paused_s = _paused_within(lab, name)
    # 2. resume (the recorded drain goes on and cordons again), then delete mid-drain
    lab.kubectl("uncordon", node, kubeconfig=kubeconfig)
    _patch(lab, name, {"paused": False})
    _start_a_blocked_drain(lab, name, node)
    lab.kubectl("delete", "k3sc", name, "-n", lab.namespace, "--wait=false")
    deleted_s = _wait("the children are being deleted", lambda: _deleting(lab, f"{name}-server-0"), 300)
    _report(f"a drain (drain.timeoutSeconds {DRAIN_TIMEOUT})", paused_s, deleted_s)


def _operation(lab: Lab, name: str, node: str) -> dict[str, Any]:
    nodes = ((lab.get("k3sc", name) or {}).get("status") or {}).get("nodes") or []
    entry = next((n for n in nodes if n.get("name") == node), {})
    op: dict[str, Any] = entry.get("operation") or {}
    return op


def _slow_installs(lab: Lab) -> None:
    base = lab.pve["k3sInstallUrl"].split("/k3s/")[0]
    answer = requests.put(f"{base}/lab/v1/chaos", data=json.dumps({"installSeconds": INSTALL_S}), timeout=10)
    assert answer.json()["installSeconds"] == INSTALL_S


def test_pause_and_deletion_latency_during_a_first_install(lab: Lab) -> None:
    name, node = "firstinst", "firstinst-server-0"
    _slow_installs(lab)
    lab.apply(lab.cluster(name, servers=1, agents=0))
    _wait("the installer runs on the guest", lambda: bool(_operation(lab, name, node).get("job")), 240)
    assert _operation(lab, name, node)["kind"] == "Install"
    time.sleep(3.0)
    started = time.monotonic()
    _patch(lab, name, {"paused": True})
    paused_s = _paused_within(lab, name)
    assert time.monotonic() - started < INSTALL_S - 5, "the install ended before the pause was measured"
    assert _operation(lab, name, node).get("kind") == "Install"  # the installer still runs on the guest
    _patch(lab, name, {"paused": False})
    time.sleep(2.0)
    lab.kubectl("delete", "k3sc", name, "-n", lab.namespace, "--wait=false")
    deleted_s = _wait("the children are being deleted", lambda: _deleting(lab, f"{name}-server-0"), 300)
    _report(f"a first install (installSeconds {INSTALL_S})", paused_s, deleted_s)


def test_pause_and_deletion_latency_during_an_upgrade_install(lab: Lab) -> None:
    name, node = "slowinst", "slowinst-server-0"
    lab.apply(lab.cluster(name, servers=1, agents=0))
    lab.wait_ready(name, timeout=240)
    _slow_installs(lab)

    _patch(lab, name, {"k3s": {"version": B}})
    _wait("the installer runs on the guest", lambda: bool(_operation(lab, name, node).get("job")), 120)
    time.sleep(3.0)  # the installer is under way (it takes INSTALL_S)
    started = time.monotonic()
    _patch(lab, name, {"paused": True})
    paused_s = _paused_within(lab, name)
    still = _operation(lab, name, node)
    assert still.get("kind") == "Upgrade", still  # paused with the installer still in flight
    assert time.monotonic() - started < INSTALL_S - 5, "the install ended before the pause was measured"
    _patch(lab, name, {"paused": False})
    time.sleep(2.0)
    assert _operation(lab, name, node).get("kind") == "Upgrade"  # resumed: the same job, looked at again
    lab.kubectl("delete", "k3sc", name, "-n", lab.namespace, "--wait=false")
    deleted_s = _wait("the children are being deleted", lambda: _deleting(lab, f"{name}-server-0"), 300)
    _report(f"an upgrade's install (installSeconds {INSTALL_S})", paused_s, deleted_s)
