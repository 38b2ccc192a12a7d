"""The K3sCluster resource: a K3s cluster on Proxmox VMs, cloned from templates or discovered.

Covers the old command-line tool's abilities declaratively: discovery by tags or ``node/vmid`` lists,
IP configuration, power actions on the whole cluster, provisioning over SSH and the version check.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from k3s_deploy.api.common import (
    ApiModel,
    Condition,
    DeletionPolicy,
    DnsName,
    GuestText,
    HostOrIP,
    HttpUrl,
    IPv4,
    IPv4Cidr,
    K3sChannel,
    K3sVersion,
    LinuxUser,
    Pattern,
    PowerState,
    ProxmoxAccess,
    PveTag,
    Rule,
    SecretKeyRef,
    Sha256Fingerprint,
    StatusModel,
    VmLocation,
    camel,
    conditions_field,
)
from k3s_deploy.api.proxmoxvm import CloneSource, CloudInitUser, VMSettings

KIND = "K3sCluster"
PLURAL = "k3sclusters"

HostKeyPolicy = Literal["GuestAgent", "TrustOnFirstUse", "AcceptChanged"]
FetchFrom = Literal["Operator", "Node"]
# Every value the operator writes to status.phase (a test checks the code sets no other).
ClusterPhase = Literal[
    "Provisioning",
    "Bootstrapping",
    "Ready",
    "Upgrading",
    "Scaling",
    "Starting",
    "Stopping",
    "Stopped",
    "Paused",
    "Stalled",
    "Deleting",
]

_ARGS_DESCRIPTION = (
    "passed to the K3s installer as they are (e.g. --disable=traefik). Do not put secrets here: "
    "the spec is readable by everyone who can read the object."
)


Arg = GuestText
Sha256Hex = Annotated[
    str, Pattern(r"[0-9a-fA-F]{64}", 64, "is not a SHA-256 checksum: 64 hex digits, as sha256sum prints")
]


def _args_field(description: str) -> Any:
    return Field(default_factory=list, max_length=64, description=description)


class ScriptInstall(ApiModel):
    """Run the K3s install script on each node (needs internet or a mirror reachable from the nodes)."""

    url: HttpUrl = Field(
        default="https://get.k3s.io", description="Where the nodes download the install script."
    )


class AirGapInstall(ApiModel):
    """Install from artefacts the user provides, for sites without internet access."""

    installer_url: HttpUrl = Field(
        alias="installerURL", description="URL of the K3s install script (install.sh) to use."
    )
    binary_url: HttpUrl = Field(
        alias="binaryURL", description="URL of the k3s binary matching the wanted version and architecture."
    )
    images_url: HttpUrl | None = Field(
        default=None,
        alias="imagesURL",
        description="Optional URL of the air-gap images tarball (k3s-airgap-images-<arch>.tar.zst).",
    )
    fetch_from: FetchFrom = Field(
        default="Operator",
        description=(
            "Operator: the operator downloads the files (https only, from hosts its admin allowed, each "
            "checked against its sha256) and copies them to each node over SSH, so nodes need no network "
            "access beyond SSH. Node: each node downloads them itself."
        ),
    )
    installer_sha256: Sha256Hex | None = Field(
        default=None,
        alias="installerSHA256",
        description="SHA-256 of the installer (hex, as sha256sum prints); required with fetchFrom: Operator.",
    )
    binary_sha256: Sha256Hex | None = Field(
        default=None,
        alias="binarySHA256",
        description="SHA-256 of the k3s binary (sha256sum-k3s-<arch>.txt of the release); required with "
        "fetchFrom: Operator.",
    )
    images_sha256: Sha256Hex | None = Field(
        default=None,
        alias="imagesSHA256",
        description="SHA-256 of the images tarball; required with fetchFrom: Operator and imagesURL.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(has(self.fetchFrom) && self.fetchFrom == 'Node') || (has(self.installerSHA256) && "
            "has(self.binarySHA256) && (!has(self.imagesURL) || has(self.imagesSHA256)))",
            "fetchFrom: Operator needs installerSHA256, binarySHA256 and, with imagesURL, imagesSHA256: "
            "the operator downloads only artefacts whose checksum the spec names",
            lambda m: (
                m.fetch_from == "Node"
                or (
                    m.installer_sha256 is not None
                    and m.binary_sha256 is not None
                    and (m.images_url is None or m.images_sha256 is not None)
                )
            ),
        ),
        Rule(
            "(has(self.fetchFrom) && self.fetchFrom == 'Node') || (self.installerURL.startsWith('https://') "
            "&& self.binaryURL.startsWith('https://') && (!has(self.imagesURL) || "
            "self.imagesURL.startsWith('https://')))",
            "fetchFrom: Operator downloads only over https: installerURL, binaryURL and imagesURL must "
            "start with https://",
            lambda m: (
                m.fetch_from == "Node"
                or all(
                    u is None or u.startswith("https://")
                    for u in (m.installer_url, m.binary_url, m.images_url)
                )
            ),
        ),
    )


class InstallSource(ApiModel):
    """How K3s gets onto the nodes. Default: the script from https://get.k3s.io."""

    script: ScriptInstall | None = Field(default=None, description="Run the install script from a URL.")
    air_gap: AirGapInstall | None = Field(
        default=None, description="Use installer and binary the user provides."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.script) != has(self.airGap)",
            "installSource needs exactly one of script or airGap",
            lambda m: (m.script is None) != (m.air_gap is None),
        ),
    )


class K3sSettings(ApiModel):
    """What K3s to install and how."""

    version: K3sVersion | None = Field(
        default=None,
        description="Pinned K3s release, e.g. v1.31.4+k3s1. Changing it starts a rolling upgrade.",
    )
    channel: K3sChannel | None = Field(
        default=None,
        description="Release channel to follow instead of a pinned version: stable, latest, testing or v1.31.",
    )
    channel_server: HttpUrl = Field(
        default="https://update.k3s.io/v1-release/channels",
        description="Channel server that resolves channels to versions (also used for the version check).",
    )
    auto_upgrade: bool = Field(
        default=False,
        description="With a channel: roll the cluster forward when the channel moves. Otherwise only report it.",
    )
    allow_downgrade: bool = Field(
        default=False, description="Allow moving to an older version than installed (refused by default)."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "K3s server token (the password; or K3s's secure K10... form). Default: generated into the "
            "Secret <cluster>-token (key token). The operator keeps the secure form read from the first "
            "server and a separate agent token (key agentToken) in <cluster>-token."
        ),
    )
    server_args: list[Arg] = _args_field("Extra arguments for K3s servers, " + _ARGS_DESCRIPTION)
    agent_args: list[Arg] = _args_field("Extra arguments for K3s agents, " + _ARGS_DESCRIPTION)
    tls_sans: list[HostOrIP] = Field(
        default_factory=list,
        max_length=32,
        alias="tlsSANs",
        description="Extra names for the API certificate; server addresses and spec.endpoint are added already.",
    )
    install_source: InstallSource | None = Field(
        default=None, description="Install script from the internet (default) or air-gapped artefacts."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.version) != has(self.channel)",
            "set exactly one of k3s.version (a pinned release such as v1.31.4+k3s1) "
            "or k3s.channel (such as stable)",
            lambda m: (m.version is None) != (m.channel is None),
        ),
        Rule(
            "!self.autoUpgrade || has(self.channel)",
            "autoUpgrade follows a channel: set k3s.channel, or change k3s.version to upgrade",
            lambda m: not m.auto_upgrade or m.channel is not None,
            field_path=".autoUpgrade",
        ),
    )


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


class NodeTemplate(VMSettings):
    """How each node's VM is made: a ProxmoxVM spec without identity and addresses (those come from
    the cluster: names, vmids and spec.network)."""

    clone: CloneSource = Field(description="Template to clone each node's VM from.")
    cloud_init: CloudInitUser | None = Field(
        default=None, description="Cloud-init user and SSH keys; addresses and DNS come from spec.network."
    )
    deletion_policy: DeletionPolicy = Field(
        default="Delete",
        description="What happens to a node's VM when it is removed: Delete, Stop or Retain.",
    )


class ServerPool(ApiModel):
    """K3s servers (control plane with embedded etcd) cloned from a template."""

    replicas: int = Field(
        default=1, ge=1, le=9, description="Number of servers; odd so etcd keeps quorum (1, 3, 5, 7, 9)."
    )
    template: NodeTemplate = Field(description="VM template of every server.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.replicas % 2 == 1",
            "servers.replicas must be odd (1, 3, 5, ...) so etcd keeps quorum when a server is lost",
            lambda m: m.replicas % 2 == 1,
            field_path=".replicas",
        ),
    )


class AgentPool(ApiModel):
    """K3s agents (workers) cloned from a template."""

    replicas: int = Field(default=0, ge=0, le=500, description="Number of agents.")
    template: NodeTemplate = Field(description="VM template of every agent.")


class RoleTags(ApiModel):
    """Discovery by Proxmox tags: a VM belongs to a role when it carries every tag listed for it."""

    servers: list[PveTag] = Field(
        min_length=1, max_length=16, description="Tags marking servers, e.g. [k3s-server, prod]."
    )
    agents: list[PveTag] = Field(default_factory=list, max_length=16, description="Tags marking agents.")


class RoleLocations(ApiModel):
    """Discovery by explicit lists of node/vmid locations."""

    servers: list[VmLocation] = Field(
        min_length=1, max_length=9, description="Server VMs as <proxmox-node>/<vmid>, e.g. [pve1/101]."
    )
    agents: list[VmLocation] = Field(default_factory=list, max_length=500, description="Agent VMs.")


class Discovery(ApiModel):
    """Use VMs that already exist instead of cloning. Discovered VMs are adopted and by default retained."""

    tags: RoleTags | None = Field(default=None, description="Find the VMs by Proxmox tags per role.")
    locations: RoleLocations | None = Field(
        default=None, description="List the VMs per role as <proxmox-node>/<vmid>."
    )
    deletion_policy: DeletionPolicy = Field(
        default="Retain",
        description="What happens to adopted VMs when the cluster or a node goes: Retain, Stop or Delete.",
    )
    cloud_init: CloudInitUser | None = Field(
        default=None, description="Cloud-init user and SSH keys to set on adopted VMs (unset: left alone)."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.tags) != has(self.locations)",
            "discovery needs exactly one of tags (find VMs by Proxmox tags) or locations (node/vmid lists)",
            lambda m: (m.tags is None) != (m.locations is None),
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
    endpoint: HostOrIP | None = Field(
        default=None,
        description="DNS name or address in front of the servers (VIP, load balancer): added to the TLS SANs "
        "and used as server URL in the kubeconfig Secret.",
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
    )


# --- status ---------------------------------------------------------------------------------------------


class SecretKeyStatusRef(StatusModel):
    """A Secret key the operator wrote or uses."""

    name: str = Field(max_length=253, description="Secret name.")
    key: str = Field(max_length=253, description="Key in the Secret.")


class ClusterNode(StatusModel):
    """One node of the cluster as the operator sees it."""

    name: str = Field(max_length=253, description="Kubernetes node name (the VM's host name).")
    role: str = Field(max_length=16, description="server or agent.")
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
    state: str | None = Field(
        default=None,
        max_length=64,
        description="Where the node is: Pending, Installing, Joined, Draining, Upgrading, Removing, ...",
    )
    message: str | None = Field(default=None, max_length=4096, description="Last problem seen on this node.")


class ChannelResolution(StatusModel):
    """The last answer of the channel server."""

    channel: str = Field(max_length=64, description="The channel asked for.")
    version: str = Field(max_length=64, description="The version it resolved to.")
    resolved_time: datetime | None = Field(default=None, description="When it was resolved.")


class UpgradeStatus(StatusModel):
    """Progress of a rolling upgrade."""

    from_version: str | None = Field(default=None, max_length=64, description="Version before the rollout.")
    to_version: str | None = Field(default=None, max_length=64, description="Version being rolled out.")
    state: str | None = Field(
        default=None, max_length=32, description="Progressing, Paused, Failed or Complete."
    )
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
    nodes: list[ClusterNode] = Field(
        default_factory=list,
        max_length=1000,
        description="Every node of the cluster.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    ip_allocations: dict[str, str] = Field(
        default_factory=dict,
        description="Static addresses handed out from the pool, by node name. A cache for reading: the record "
        "is each ProxmoxVM's spec.cloudInit.ipConfig, which the operator reads back every pass.",
    )
    upgrade: UpgradeStatus | None = None
    last_sync_time: datetime | None = Field(default=None, description="Last full reconcile.")
    conditions: list[Condition] = conditions_field()


class K3sCluster(ApiModel):
    """A K3s cluster on Proxmox VE virtual machines, managed by k3s-deploy."""

    model_config = ConfigDict(alias_generator=camel, populate_by_name=True, extra="ignore")

    api_version: Literal["k3sdeploy.io/v1alpha1"] = Field(default="k3sdeploy.io/v1alpha1", alias="apiVersion")
    kind: Literal["K3sCluster"] = "K3sCluster"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: K3sClusterSpec
    status: K3sClusterStatus = Field(default_factory=K3sClusterStatus)
