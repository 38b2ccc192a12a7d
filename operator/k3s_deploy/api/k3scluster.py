"""The K3sCluster resource: a K3s cluster on Proxmox VMs, cloned from templates or discovered.

Covers the old command-line tool's abilities declaratively: discovery by tags or ``node/vmid`` lists,
IP configuration, power actions on the whole cluster, provisioning over SSH and the version check.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from k3s_deploy.api.addons import Addon
from k3s_deploy.api.common import (
    ApiModel,
    DnsName,
    IPv4,
    IPv4Cidr,
    LinuxUser,
    PowerState,
    ProxmoxAccess,
    Rule,
    SecretKeyRef,
    Sha256Fingerprint,
    camel,
)
from k3s_deploy.api.discovery import Discovery
from k3s_deploy.api.endpoint import (
    ENDPOINT_DESCRIPTION,
    KUBE_VIP_DESCRIPTION,
    KUBE_VIP_NEEDS_AN_ADDRESS,
    Endpoint,
    KubeVip,
)
from k3s_deploy.api.etcd_snapshots import EtcdSnapshots
from k3s_deploy.api.k3s_install import AirGapInstall, FetchFrom, InstallSource, K3sSettings, ScriptInstall
from k3s_deploy.api.k3scluster_status import (
    ChannelResolution,
    ClusterNode,
    ClusterPhase,
    K3sClusterStatus,
    PoolStatus,
    SecretKeyStatusRef,
    UpgradeStatus,
)
from k3s_deploy.api.nodepools import (
    RESERVED_POOL_NAMES,
    NodeRegistration,
    NodeTemplate,
    PoolName,
    PoolTemplate,
)
from k3s_deploy.api.remediation import RemediationPolicy

KIND = "K3sCluster"
PLURAL = "k3sclusters"

HostKeyPolicy = Literal["GuestAgent", "TrustOnFirstUse", "AcceptChanged"]
Teardown = Literal["Uninstall", "Leave"]


class SshSettings(ApiModel):
    """How the operator logs in to the nodes."""

    user: LinuxUser = Field(
        default="root", description="Login user; commands run through sudo when it is not root."
    )
    private_key_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the OpenSSH private key (e.g. key ssh-privatekey of a kubernetes.io/ssh-auth Secret)."
    )
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    host_key_policy: HostKeyPolicy = Field(
        default="GuestAgent",
        description=(
            "GuestAgent (default): before the first SSH connection the node's host public key is read "
            "through the QEMU guest agent over the verified Proxmox API (needs qemu-guest-agent in the VM "
            "and VM.GuestAgent.FileRead, or VM.Monitor on PVE 8) and only that key is accepted; it is "
            "pinned in the Secret <cluster>-host-keys and a different key later is refused (Stalled=True, "
            "reason HostKeyChanged). TrustOnFirstUse: the first key a node presents is pinned instead (condition "
            "HostKeyTrustedOnFirstUse). AcceptChanged: like TrustOnFirstUse, and a changed key is accepted "
            "and re-pinned with a warning Event (only for rebuilt nodes you trust)."
        ),
    )
    known_hosts: dict[str, Sha256Fingerprint] = Field(
        default_factory=dict,
        description=(
            "Host key fingerprints known in advance, by node address or VM name (SHA256:... as printed by "
            "ssh-keygen -lf). Checked even on first contact, and they take precedence over a pinned key: "
            "a node presenting another key stalls the cluster with reason HostKeyChanged."
        ),
        json_schema_extra={"maxProperties": 256},
    )
    connect_timeout_seconds: int = Field(
        default=10,
        ge=1,
        le=300,
        description="Time limit for opening one SSH connection: TCP connect, handshake and login.",
    )
    command_timeout_seconds: int = Field(
        default=600, ge=10, le=7200, description="Time limit for one remote command (an install, say)."
    )


class ServerPool(NodeRegistration):
    """K3s servers (control plane: embedded etcd with more than one; a lone server uses SQLite)."""

    replicas: int = Field(
        default=1,
        ge=1,
        le=9,
        description="Number of servers; odd so etcd keeps quorum (1, 3, 5, 7, 9). Growing from 1 converts "
        "the running server to embedded etcd first (a restart, no reinstall); servers leave one at a time.",
    )
    template: NodeTemplate = Field(description="VM template of every server.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.replicas % 2 == 1",
            "servers.replicas must be odd (1, 3, 5, ...) so etcd keeps quorum when a server is lost",
            lambda m: m.replicas % 2 == 1,
            field_path=".replicas",
        ),
        *NodeRegistration.rules,
    )


class AgentPool(NodeRegistration):
    """K3s agents (workers) cloned from a template."""

    replicas: int = Field(default=0, ge=0, le=500, description="Number of agents.")
    template: NodeTemplate = Field(description="VM template of every agent.")


class NamedAgentPool(AgentPool):
    """A named group of agents beside the default ones, scaled on its own: its VMs are
    <cluster>-<name>-<i>, and it can have its own template, placement, labels and taints."""

    name: PoolName = Field(description="Pool name, unique in the cluster; part of each VM's name.")
    template: PoolTemplate = Field(description="VM template of the pool's agents.")

    rules: ClassVar[tuple[Rule, ...]] = (
        *NodeRegistration.rules,
        Rule(
            " && ".join(f"self.name != '{n}'" for n in RESERVED_POOL_NAMES),
            "agentPools[].name must not be server or agent (the default roles' VMs use those names)",
            lambda m: m.name not in RESERVED_POOL_NAMES,
            field_path=".name",
        ),
    )


class IPPool(ApiModel):
    """Static addresses to hand out, one per node, stable for the node's life."""

    cidr: IPv4Cidr | None = Field(
        default=None,
        description="Hand out addresses of this subnet, e.g. 192.168.1.0/24 (network, broadcast and gateway skipped).",
    )
    start: IPv4 | None = Field(
        default=None, description="First address of a range (with end and prefixLength)."
    )
    end: IPv4 | None = Field(default=None, description="Last address of a range.")
    prefix_length: int | None = Field(
        default=None, ge=1, le=32, description="Prefix length the range addresses get, e.g. 24."
    )
    exclude: list[IPv4] = Field(
        default_factory=list, max_length=256, description="Addresses never handed out."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.cidr) != (has(self.start) || has(self.end))",
            "ipPool needs either cidr or a start/end range, not both",
            lambda m: (m.cidr is not None) != (m.start is not None or m.end is not None),
        ),
        Rule(
            "has(self.start) == has(self.end) && has(self.start) == has(self.prefixLength)",
            "an address range needs start, end and prefixLength together",
            lambda m: (m.start is None) == (m.end is None) == (m.prefix_length is None),
        ),
    )


class ClusterNetwork(ApiModel):
    """Node addressing and DNS, written into each VM's cloud-init (the old configure-ips)."""

    ip_pool: IPPool | None = Field(
        default=None,
        alias="ipPool",
        description="Static addresses for the nodes; without a pool nodes use DHCP.",
    )
    gateway: IPv4 | None = Field(default=None, description="Default gateway for pool addresses.")
    nameservers: list[IPv4] = Field(default_factory=list, max_length=3, description="DNS servers.")
    search_domain: DnsName | None = Field(default=None, description="DNS search domain.")
    address_cidr: IPv4Cidr | None = Field(
        default=None,
        alias="addressCIDR",
        description="With DHCP: the node address is the first guest-agent address inside this CIDR.",
    )
    interface: int = Field(
        default=0,
        ge=0,
        le=31,
        description="Index N of the VMs' network device (netN) these settings go to, as cloud-init ipconfigN.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.ipPool) || has(self.gateway)",
            "a static ipPool needs network.gateway",
            lambda m: m.ip_pool is None or m.gateway is not None,
            field_path=".gateway",
        ),
    )


class DrainOptions(ApiModel):
    """How a node is emptied before an upgrade or removal."""

    enabled: bool = Field(default=True, description="Cordon and drain before touching a node.")
    timeout_seconds: int = Field(default=300, ge=0, le=86400, description="Give up draining after this long.")
    ignore_daemon_sets: bool = Field(
        default=True, description="Leave DaemonSet pods in place (as kubectl drain)."
    )
    delete_empty_dir_data: bool = Field(default=True, description="Evict pods with emptyDir volumes too.")
    force: bool = Field(default=False, description="Delete pods that no controller manages.")


class UpgradePolicy(ApiModel):
    """How version changes roll through the cluster: servers one at a time, then agents."""

    agent_concurrency: int = Field(
        default=1, ge=1, le=100, description="How many agents are upgraded at the same time."
    )
    drain: DrainOptions = Field(default_factory=DrainOptions)
    node_ready_timeout_seconds: int = Field(
        default=600,
        ge=30,
        le=86400,
        description="How long an upgraded node may take to be Ready at the new version before the rollout stops.",
    )


class K3sClusterSpec(ProxmoxAccess):
    """Desired state of a K3s cluster on Proxmox VMs."""

    k3s: K3sSettings
    ssh: SshSettings
    servers: ServerPool | None = Field(
        default=None, description="Clone the servers from a template (use this or discovery)."
    )
    agents: AgentPool | None = Field(default=None, description="Clone the agents from a template.")
    agent_pools: list[NamedAgentPool] = Field(
        default_factory=list,
        max_length=8,
        description="More agents in named pools beside spec.agents, each with its own template, "
        "replicas, labels and taints (needs spec.servers).",
    )
    discovery: Discovery | None = Field(
        default=None,
        description="Use existing VMs, found by tags or node/vmid lists (instead of servers/agents).",
    )
    network: ClusterNetwork | None = None
    power_state: PowerState = Field(
        default="Running",
        description="Stopped shuts down agents, then servers; Running starts servers, then agents.",
    )
    upgrade: UpgradePolicy = Field(default_factory=UpgradePolicy)
    paused: bool = Field(
        default=False, description="Stop acting (rollouts halt between nodes); status is still reported."
    )
    endpoint: Endpoint | None = Field(default=None, description=ENDPOINT_DESCRIPTION)
    kube_vip: KubeVip | None = Field(default=None, description=KUBE_VIP_DESCRIPTION)
    etcd_snapshots: EtcdSnapshots | None = Field(
        default=None,
        description="etcd snapshots (schedule, retention, S3) and restore; needs embedded etcd (2+ servers).",
    )
    addons: list[Addon] = Field(
        default_factory=list,
        max_length=50,
        description="Add-ons, each a file k3s-deploy-addon-<name>.yaml in the servers' auto-deploy directory "
        "that K3s applies; removing one deletes its file and K3s deletes its objects.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    remediation: RemediationPolicy | None = Field(
        default=None,
        description="Reboot, then replace, nodes NotReady for too long (off when not set).",
    )
    teardown: Teardown = Field(
        default="Uninstall",
        description="On deletion, K3s on VMs that are kept (deletionPolicy Retain or Stop, adopted VMs): Uninstall "
        "runs k3s-uninstall.sh / k3s-agent-uninstall.sh on each first (an unreachable VM is released after "
        "a few tries, with a Warning Event); Leave keeps K3s installed.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        *ProxmoxAccess.rules,
        Rule(
            "has(self.servers) != has(self.discovery)",
            "set either spec.servers (and optionally spec.agents) to clone VMs, or spec.discovery to use "
            "existing VMs, not both",
            lambda m: (m.servers is None) != (m.discovery is None),
        ),
        Rule(
            "!has(self.agents) || has(self.servers)",
            "spec.agents clones agents next to spec.servers; with discovery list agents under spec.discovery",
            lambda m: m.agents is None or m.servers is not None,
            field_path=".agents",
        ),
        Rule(
            "!has(self.agentPools) || size(self.agentPools) == 0 || has(self.servers)",
            "spec.agentPools clones agents next to spec.servers; it cannot be used with discovery",
            lambda m: not m.agent_pools or m.servers is not None,
            field_path=".agentPools",
        ),
        Rule(
            "!has(self.agentPools) || self.agentPools.all(p, self.agentPools.exists_one(q, q.name == p.name))",
            "spec.agentPools[].name must be unique",
            lambda m: len({p.name for p in m.agent_pools}) == len(m.agent_pools),
            field_path=".agentPools",
        ),
        KUBE_VIP_NEEDS_AN_ADDRESS,
    )


class K3sCluster(ApiModel):
    """A K3s cluster on Proxmox VE virtual machines, managed by k3s-deploy."""

    model_config = ConfigDict(alias_generator=camel, populate_by_name=True, extra="ignore")

    api_version: Literal["k3sdeploy.io/v1alpha1"] = Field(default="k3sdeploy.io/v1alpha1", alias="apiVersion")
    kind: Literal["K3sCluster"] = "K3sCluster"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: K3sClusterSpec
    status: K3sClusterStatus = Field(default_factory=K3sClusterStatus)


__all__ = [
    "KIND",
    "PLURAL",
    "AirGapInstall",
    "ChannelResolution",
    "ClusterNode",
    "ClusterPhase",
    "FetchFrom",
    "InstallSource",
    "K3sCluster",
    "K3sClusterSpec",
    "K3sClusterStatus",
    "K3sSettings",
    "KubeVip",
    "NamedAgentPool",
    "NodeTemplate",
    "PoolStatus",
    "ScriptInstall",
    "SecretKeyStatusRef",
    "SshSettings",
    "UpgradeStatus",
]
