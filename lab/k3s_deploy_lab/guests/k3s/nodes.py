"""Nodes as a kubelet and the node lifecycle controller would write them (neither runs in the lab).

Pure functions: what to PATCH into a Node's status for one heartbeat (or once heartbeats stopped), and
which taints the node lifecycle controller would set.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

MANAGED_TAINTS = (
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/unschedulable",
)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class NodeRecord:
    """What the guests process knows about one installed node."""

    name: str
    role: str  # server | agent
    ip: str
    version: str
    instance_id: str
    etcd: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    running: bool = True  # the k3s service runs and the VM is on
    internal_ip: str = ""  # --node-ip when given, else the guest's address


def status_patch(node: NodeRecord, current: dict[str, Any]) -> dict[str, Any]:
    """The merge patch for ``/status``: conditions (keeping transition times), addresses, nodeInfo."""
    stamp = now()
    if node.running:
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }
    else:
        ready = {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
        }
    previous = {c["type"]: c for c in (current.get("status") or {}).get("conditions") or []}
    old = previous.get("Ready")
    transition = old["lastTransitionTime"] if old and old.get("status") == ready["status"] else stamp
    heartbeat = stamp if node.running or not old else old.get("lastHeartbeatTime", stamp)
    conditions = [{**ready, "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition}]
    for kind, reason, message in (
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ):
        prev = previous.get(kind)
        status_value = "False" if node.running else "Unknown"
        conditions.append(
            {
                "type": kind,
                "status": status_value,
                "reason": reason if node.running else "NodeStatusUnknown",
                "message": message if node.running else "Kubelet stopped posting node status.",
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": prev["lastTransitionTime"]
                if prev and prev.get("status") == status_value
                else stamp,
            }
        )
    return {
        "status": {
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": node.internal_ip or node.ip},
                {"type": "Hostname", "address": node.name},
            ],
            "capacity": {
                "cpu": "2",
                "memory": "4025424Ki",
                "pods": "110",
                "ephemeral-storage": "30830492Ki",
            },
            "allocatable": {
                "cpu": "2",
                "memory": "4025424Ki",
                "pods": "110",
                "ephemeral-storage": "29992240911",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "kubeletVersion": node.version,
                "kubeProxyVersion": node.version,
                "containerRuntimeVersion": "containerd://1.7.23-k3s2",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "Ubuntu 24.04 LTS",
                "kernelVersion": "6.8.0-51-generic",
                "machineID": node.instance_id[:32].ljust(32, "0"),
                "systemUUID": node.instance_id,
                "bootID": node.instance_id,
            },
        }
    }


def lifecycle_taints(node: NodeRecord, current: dict[str, Any]) -> list[dict[str, str]] | None:
    """The taints to set, or None when they are right already.

    As the node lifecycle controller: lift ``not-ready`` (added at registration) once the node is
    Ready, mark a silent node ``unreachable``, mirror a cordon (``spec.unschedulable``) as a taint.
    """
    spec = current.get("spec") or {}
    taints = [t for t in spec.get("taints") or [] if t.get("key") not in MANAGED_TAINTS]
    if not node.running:
        taints += [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        ]
    if spec.get("unschedulable"):
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
    before = [(t.get("key"), t.get("effect")) for t in spec.get("taints") or []]
    if before == [(t.get("key"), t.get("effect")) for t in taints]:
        return None
    for taint in taints:
        if taint["key"] in MANAGED_TAINTS and "timeAdded" not in taint:
            taint["timeAdded"] = now()
    return taints
