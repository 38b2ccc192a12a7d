"""Fully populated statuses of both kinds: every field the operator may write, set once.

Used to prove that the status schema keeps everything (the apiserver prunes unknown status fields
silently, and kopf would not notice).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from k3s_deploy.api.addons import AddonStatus
from k3s_deploy.api.etcd_snapshots import EtcdRestoreStatus, EtcdSnapshotInfo
from k3s_deploy.api.k3scluster import (
    ChannelResolution,
    ClusterNode,
    K3sClusterStatus,
    PoolStatus,
    SecretKeyStatusRef,
    UpgradeStatus,
)
from k3s_deploy.api.node_operation import NodeOperation
from k3s_deploy.api.proxmoxvm import ProxmoxVMStatus, TaskRef
from k3s_deploy.api.remediation import RemediationRecord

T0 = "2026-11-28T12:00:00Z"


def _conditions() -> list[dict[str, Any]]:
    return [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "message": "everything is fine",
            "observedGeneration": 3,
            "lastTransitionTime": T0,
        },
        {
            "type": "Reconciling",
            "status": "True",
            "reason": "Upgrading",
            "message": "upgrading agent-1",
            "observedGeneration": 3,
            "lastTransitionTime": T0,
        },
    ]


def full_vm_status() -> ProxmoxVMStatus:
    return ProxmoxVMStatus(
        observed_generation=3,
        vmid=120,
        node="pve1",
        name="web-1",
        power_state="Running",
        addresses=["192.168.10.21", "10.0.0.5"],
        task_ref=TaskRef(
            upid="UPID:pve1:00001234:00005678:6747A0C0:qmstart:120:k3s-deploy@pve!operator:",
            action="start",
            node="pve1",
            started_at=T0,
        ),
        pending_changes=["memory", "cores"],
        deletion_policy="Delete",
        adopted=False,
        last_sync_time=T0,
        conditions=_conditions(),
    )


def full_cluster_status() -> K3sClusterStatus:
    return K3sClusterStatus(
        observed_generation=3,
        phase="Upgrading",
        server_url="https://192.168.20.10:6443",
        kubeconfig_secret_ref=SecretKeyStatusRef(name="prod-kubeconfig", key="value"),
        token_secret_ref=SecretKeyStatusRef(name="prod-token", key="token"),
        init_server="prod-server-0",
        k3s_version="v1.30.8+k3s1",
        resolved_version="v1.31.4+k3s1",
        available_version="v1.31.4+k3s1",
        channel_resolution=ChannelResolution(channel="stable", version="v1.31.4+k3s1", resolved_time=T0),
        desired_servers=3,
        desired_agents=2,
        ready_servers=3,
        ready_agents=1,
        pools=[PoolStatus(name="gpu", replicas=2, ready=1)],
        pool_summary="gpu 1/2",
        nodes=[
            ClusterNode(
                name="prod-server-0",
                role="server",
                pool="",
                vm="prod-server-0",
                vmid=130,
                pve_node="pve1",
                ip="192.168.20.10",
                k3s_version="v1.31.4+k3s1",
                ready=True,
                host_key_fingerprint="SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
                adopted=False,
                state="Joined",
                message="",
                config_digest="0" * 64,
                operation=NodeOperation(
                    kind="Drain",
                    action="Upgrade",
                    target="v1.31.4+k3s1",
                    started_time=T0,
                    timeout_seconds=300,
                    attempt=1,
                    job="upgrade-prod-server-0-v1.31.4_k3s1",
                    evicted=2,
                ),
            ),
            ClusterNode(name="prod-agent-0", role="agent", ready=False, state="Upgrading"),
        ],
        ip_allocations={"prod-server-0": "192.168.20.10", "prod-agent-0": "192.168.20.13"},
        addons=[AddonStatus(name="metallb", digest="sha256:" + "ab" * 32)],
        remediations=[RemediationRecord(node="prod-agent-0", action="Reboot", time="2026-01-01T12:00:00Z")],
        upgrade=UpgradeStatus(
            from_version="v1.30.8+k3s1",
            to_version="v1.31.4+k3s1",
            state="Progressing",
            current_nodes=["prod-agent-0"],
            completed_nodes=["prod-server-0"],
            failed_node=None,
            started_time=T0,
            finished_time=None,
        ),
        etcd_snapshots=[
            EtcdSnapshotInfo(
                name="before-srv-1-1735689600",
                node="srv-1",
                location="file:///var/lib/rancher/k3s/server/db/snapshots/before-srv-1-1735689600",
                size=2174976,
                created_time=T0,
            )
        ],
        etcd_snapshots_listed_time=T0,
        snapshot_request="before-upgrade",
        etcd_restore=EtcdRestoreStatus(
            request_id="r1",
            name="before-srv-1-1735689600",
            step="Complete",
            path="/var/lib/rancher/k3s/server/db/snapshots/before-srv-1-1735689600",
            rejoined=["srv-2"],
            started_time=T0,
            step_started_time=T0,
            finished_time=T0,
            message="restored",
        ),
        last_sync_time=T0,
        conditions=_conditions(),
    )


def unset_fields(model: BaseModel, path: str = "") -> list[str]:
    """Fields left at None or empty anywhere in ``model`` (a 'full' status must have none but the
    deliberately empty ones)."""
    missing = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            missing += unset_fields(value, f"{path}{name}.")
        elif value is None or value == [] or value == {}:
            missing.append(path + name)
        elif isinstance(value, list) and isinstance(value[0], BaseModel):
            missing += unset_fields(value[0], f"{path}{name}[0].")
    return missing
