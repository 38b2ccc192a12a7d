"""The status of a K3sCluster: what the operator observed and decided, as models the pass builds and
reads (never raw keys), so a misspelt field cannot reach the apiserver."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from k3s_deploy.api.addons import AddonStatus
from k3s_deploy.api.common import Condition, StatusModel, conditions_field
from k3s_deploy.api.etcd_snapshots import EtcdRestoreStatus, EtcdSnapshotInfo
from k3s_deploy.api.node_operation import NodeOperation
from k3s_deploy.api.remediation import RemediationRecord

# Every value the operator writes to status.phase (a test checks the code sets no other).
ClusterPhase = Literal[
    "Provisioning",
    "Bootstrapping",
    "Ready",
    "Upgrading",
    "Reconfiguring",
    "Scaling",
    "Starting",
    "Stopping",
    "Stopped",
    "Paused",
    "Stalled",
    "Deleting",
    "Restoring",
]
NodeRole = Literal["server", "agent"]
# Every value the operator writes to status.nodes[].state.
NodeState = Literal[
    "Pending",
    "Provisioning",
    "VMReplaced",
    "VMReady",
    "Reachable",
    "Unreachable",
    "Installed",
    "Installing",
    "InstallFailed",
    "Joining",
    "Joined",
    "NotReady",
    "Ready",
    "Draining",
    "Upgrading",
    "Reconfiguring",
    "Converting",
    "Failed",
    "Stopping",
    "Stopped",
    "Removing",
]
UpgradeState = Literal["Progressing", "Paused", "Failed", "Complete"]


class SecretKeyStatusRef(StatusModel):
    """A Secret key the operator wrote or uses."""

    name: str = Field(max_length=253, description="Secret name.")
    key: str = Field(max_length=253, description="Key in the Secret.")


class ClusterNode(StatusModel):
    """One node of the cluster as the operator sees it."""

    name: str = Field(max_length=253, description="Kubernetes node name (the VM's host name).")
    role: NodeRole = Field(description="server or agent.")
    pool: str | None = Field(
        default=None, max_length=63, description="Agent pool (spec.agentPools) of the node."
    )
    vm: str | None = Field(default=None, max_length=253, description="ProxmoxVM object name.")
    vmid: int | None = Field(default=None, description="Proxmox VM id.")
    pve_node: str | None = Field(default=None, max_length=63, description="Proxmox node the VM is on.")
    ip: str | None = Field(
        default=None, max_length=45, description="Address the operator uses for SSH and K3s."
    )
    k3s_version: str | None = Field(
        default=None, max_length=64, description="K3s version running on the node."
    )
    ready: bool = Field(default=False, description="The node is Ready in the cluster's own API.")
    host_key_fingerprint: str | None = Field(
        default=None,
        max_length=128,
        description="The node's SSH host key (SHA256:...), as pinned in the Secret <cluster>-host-keys.",
    )
    adopted: bool | None = Field(default=None, description="The VM was discovered, not cloned.")
    state: NodeState | None = Field(default=None, description="Where the node is in its life.")
    message: str | None = Field(default=None, max_length=4096, description="Last problem seen on this node.")
    config_digest: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "Keyed digest (HMAC-SHA256) of the K3s settings files last applied on the node (config.yaml.d "
            "and registries.yaml), read back from the node; a node whose digest differs from the spec's "
            "gets the new files and a K3s restart."
        ),
    )
    operation: NodeOperation | None = Field(
        default=None, description="Long work in flight on the node (drain, upgrade, wait for Ready)."
    )


class PoolStatus(StatusModel):
    """One agent pool: how many agents it wants and how many are Ready."""

    name: str = Field(max_length=63, description="Pool name (spec.agentPools[].name).")
    replicas: int = Field(default=0, description="Agents the pool wants.")
    ready: int = Field(default=0, description="Agents of the pool Ready at the wanted version.")


class ChannelResolution(StatusModel):
    """The last answer of the channel server."""

    channel: str = Field(max_length=64, description="The channel asked for.")
    version: str = Field(max_length=64, description="The version it resolved to.")
    resolved_time: datetime | None = Field(default=None, description="When it was resolved.")


class UpgradeStatus(StatusModel):
    """Progress of a rolling upgrade."""

    from_version: str | None = Field(default=None, max_length=64, description="Version before the rollout.")
    to_version: str | None = Field(default=None, max_length=64, description="Version being rolled out.")
    state: UpgradeState | None = Field(default=None, description="Where the rollout is.")
    current_nodes: list[str] = Field(
        default_factory=list, max_length=100, description="Nodes being upgraded right now."
    )
    completed_nodes: list[str] = Field(
        default_factory=list, max_length=1000, description="Nodes already at the new version."
    )
    failed_node: str | None = Field(
        default=None, max_length=253, description="Node that stopped the rollout."
    )
    started_time: datetime | None = Field(default=None, description="When the rollout started.")
    finished_time: datetime | None = Field(default=None, description="When it completed or stopped.")


class K3sClusterStatus(StatusModel):
    """Observed state of the cluster, written by the operator."""

    observed_generation: int | None = Field(default=None, description="metadata.generation last acted on.")
    phase: ClusterPhase | None = Field(
        default=None,
        description="For display only (use the conditions in automation): where the cluster is in its life.",
    )
    server_url: str | None = Field(
        default=None, max_length=2048, alias="serverURL", description="URL of the cluster's Kubernetes API."
    )
    kubeconfig_secret_ref: SecretKeyStatusRef | None = Field(
        default=None, description="Admin kubeconfig: Secret <cluster>-kubeconfig, key value."
    )
    token_secret_ref: SecretKeyStatusRef | None = Field(default=None, description="Join token in use.")
    init_server: str | None = Field(
        default=None, max_length=253, description="The server that initialised the cluster (first one)."
    )
    k3s_version: str | None = Field(
        default=None, max_length=64, description="Lowest K3s version across nodes."
    )
    resolved_version: str | None = Field(
        default=None, max_length=64, description="The version the spec asks for (pinned or from the channel)."
    )
    available_version: str | None = Field(
        default=None, max_length=64, description="Newest version of the channel (the version check)."
    )
    channel_resolution: ChannelResolution | None = None
    desired_servers: int | None = Field(default=None, description="Servers wanted.")
    desired_agents: int | None = Field(default=None, description="Agents wanted.")
    ready_servers: int | None = Field(default=None, description="Servers Ready at the wanted version.")
    ready_agents: int | None = Field(default=None, description="Agents Ready at the wanted version.")
    pools: list[PoolStatus] = Field(
        default_factory=list,
        max_length=16,
        description="Each agent pool of spec.agentPools with its wanted and Ready agents.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    pool_summary: str | None = Field(
        default=None, max_length=1024, description="The pools for display: name ready/replicas, ..."
    )
    nodes: list[ClusterNode] = Field(
        default_factory=list,
        max_length=1000,
        description="Every node of the cluster.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    remediations: list[RemediationRecord] = Field(
        default_factory=list,
        max_length=20,
        description="The latest remediation actions (newest last); each also posted as an Event.",
    )
    addons: list[AddonStatus] = Field(
        default_factory=list,
        max_length=50,
        description="Add-on files the servers hold (read back from them each pass), by name.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    ip_allocations: dict[str, str] = Field(
        default_factory=dict,
        description="Static addresses handed out from the pool, by node name. A cache for reading: the record "
        "is each ProxmoxVM's spec.cloudInit.ipConfig, which the operator reads back every pass.",
    )
    upgrade: UpgradeStatus | None = None
    etcd_snapshots: list[EtcdSnapshotInfo] | None = Field(
        default=None,
        max_length=50,
        description="The newest snapshots (k3s etcd-snapshot ls on the init server).",
    )
    etcd_snapshots_listed_time: datetime | None = Field(
        default=None, description="When etcdSnapshots was read."
    )
    snapshot_request: str | None = Field(
        default=None,
        max_length=63,
        description="The k3sdeploy.io/snapshot-request annotation value handled last (one snapshot per value).",
    )
    etcd_restore: EtcdRestoreStatus | None = Field(
        default=None, description="The last restore and where it is."
    )
    last_sync_time: datetime | None = Field(default=None, description="Last full reconcile.")
    conditions: list[Condition] = conditions_field()
