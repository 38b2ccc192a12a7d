"""The ProxmoxVM resource: one Proxmox VE virtual machine, adopted or cloned, configured and powered.

The VM parts (source, resources, cloud-init, power) are separate models so K3sCluster can reuse them in
its node-pool templates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from k3s_deploy.api.common import (
    ApiModel,
    Condition,
    DeletionPolicy,
    DiskKey,
    DnsName,
    IPv4,
    IPv4Cidr,
    LinuxUser,
    PowerState,
    ProxmoxAccess,
    PveNodeName,
    PveTag,
    Rule,
    SshPublicKey,
    StatusModel,
    StorageId,
    Vmid,
    VmName,
    camel,
    conditions_field,
)

KIND = "ProxmoxVM"
PLURAL = "proxmoxvms"

RestartPolicy = Literal["Manual", "Automatic"]
Placement = Literal["Spread", "Pack"]


def _tags_field(description: str) -> Any:
    return Field(
        default_factory=list,
        max_length=32,
        description=description,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class VMSelector(ApiModel):
    """Finds one VM in the Proxmox cluster. Every criterion given must match; exactly one VM may match."""

    vmid: Vmid | None = Field(default=None, description="The VM's numeric id (100 and up).")
    name: VmName | None = Field(default=None, description="The VM's name as shown in Proxmox.")
    tags: list[PveTag] = _tags_field("Tags the VM must all carry (lower-case).")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.vmid) || has(self.name) || (has(self.tags) && size(self.tags) > 0)",
            "give at least one of vmid, name or tags to find the VM",
            lambda m: m.vmid is not None or m.name is not None or bool(m.tags),
        ),
    )


class CloneSource(ApiModel):
    """Create the VM by cloning a template."""

    template: VMSelector = Field(description="The template (or VM) to clone, found by vmid, name or tags.")
    full: bool = Field(
        default=True,
        description="Full clone (independent disks). False makes a linked clone, which needs a template.",
    )
    storage: StorageId | None = Field(
        default=None, description="Target storage for a full clone's disks (default: the template's)."
    )
    pool: StorageId | None = Field(default=None, description="Proxmox resource pool to add the new VM to.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.full || !has(self.storage)",
            "storage applies to full clones only; remove storage or set full: true",
            lambda m: m.full or m.storage is None,
        ),
    )


class VMSource(ApiModel):
    """Where the VM comes from: an existing VM to adopt, or a template to clone."""

    existing: VMSelector | None = Field(
        default=None,
        description=(
            "Adopt a VM that already exists. Nothing the spec does not ask for is changed; "
            "the deletion policy defaults to Retain."
        ),
    )
    clone: CloneSource | None = Field(
        default=None,
        description="Clone a template into a new VM, marked as owned with the k3sdeploy-<uid> tag.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.existing) != has(self.clone)",
            "set exactly one of source.existing (adopt a VM) or source.clone (clone a template)",
            lambda m: (m.existing is None) != (m.clone is None),
        ),
    )


class Resources(ApiModel):
    """Hardware. Unset fields keep the template's (or adopted VM's) values."""

    cores: int | None = Field(default=None, ge=1, le=512, description="CPU cores per socket.")
    sockets: int | None = Field(default=None, ge=1, le=16, description="CPU sockets.")
    memory_mib: int | None = Field(
        default=None, ge=64, le=16_777_216, alias="memoryMiB", description="Memory in MiB."
    )
    disk_gib: int | None = Field(
        default=None,
        ge=1,
        le=131_072,
        alias="diskGiB",
        description="Size of the boot disk in GiB. Disks only grow: a smaller size than now is refused.",
    )
    disk: DiskKey = Field(default="scsi0", description="Which disk diskGiB applies to (scsi0, virtio0, ...).")


class IPConfig(ApiModel):
    """Address of one network interface (cloud-init ipconfigN, N from cloudInit.interface)."""

    dhcp: bool | None = Field(default=None, description="Take the address from DHCP.")
    address: IPv4Cidr | None = Field(
        default=None, description="Static address with prefix length, like 192.168.1.21/24."
    )
    gateway: IPv4 | None = Field(default=None, description="Default gateway for a static address.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(has(self.dhcp) && self.dhcp) != has(self.address)",
            "ipConfig needs exactly one of dhcp: true or a static address (like 192.168.1.21/24)",
            lambda m: (m.dhcp is True) != (m.address is not None),
        ),
        Rule(
            "!has(self.gateway) || has(self.address)",
            "gateway goes with a static address; with DHCP the gateway comes from the DHCP server",
            lambda m: m.gateway is None or m.address is not None,
            field_path=".gateway",
        ),
    )


class CloudInitUser(ApiModel):
    """Login settings written through cloud-init."""

    user: LinuxUser | None = Field(default=None, description="Default user cloud-init creates (ciuser).")
    ssh_authorized_keys: list[SshPublicKey] = Field(
        default_factory=list,
        max_length=32,
        description="OpenSSH public keys allowed to log in as that user (sshkeys).",
    )


class CloudInit(CloudInitUser):
    """Cloud-init settings of the VM. Changing them regenerates the cloud-init drive."""

    ip_config: IPConfig | None = Field(default=None, alias="ipConfig")
    interface: int = Field(
        default=0,
        ge=0,
        le=31,
        description="Index N of the network device (netN) ipConfig applies to, written as cloud-init ipconfigN. "
        "The VM must have that netN device.",
    )
    nameservers: list[IPv4] = Field(
        default_factory=list, max_length=3, description="DNS servers (nameserver)."
    )
    search_domain: DnsName | None = Field(default=None, description="DNS search domain (searchdomain).")


class GuestAgent(ApiModel):
    """How addresses are read from the QEMU guest agent."""

    address_cidr: IPv4Cidr | None = Field(
        default=None,
        alias="addressCIDR",
        description="Report only addresses inside this CIDR (loopback and link-local are always skipped).",
    )
    timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="How long after start to wait for the agent before the AgentReady condition turns False.",
    )


class VMSettings(ApiModel):
    """What a VM should look like once it exists; shared with K3sCluster node templates."""

    node: PveNodeName | None = Field(
        default=None,
        description="Proxmox node to place (clone) or look for (adopt) the VM on.",
    )
    allowed_nodes: list[PveNodeName] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Clone onto a node of this list (instead of a fixed node), chosen by placement; "
            "empty: any online node."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    placement: Placement = Field(
        default="Spread",
        description=(
            "How a new clone picks its node among allowedNodes, counting its siblings (the ProxmoxVMs with "
            "the same k3sdeploy.io/cluster and k3sdeploy.io/role labels, placed or being placed). Spread: "
            "the node with the fewest siblings, so 3 servers on 3 nodes get one node each. Pack: the node "
            "with the most. Ties go to the most free memory, then the name. A placed VM never moves."
        ),
    )
    resources: Resources | None = None
    tags: list[PveTag] = _tags_field(
        "Proxmox tags the VM must carry. Tags not listed are left alone; the operator adds its ownership "
        "tag (k3sdeploy-<uid prefix>) to VMs it clones."
    )
    power_state: PowerState = Field(
        default="Running", description="Running starts the VM, Stopped shuts it down."
    )
    restart_policy: RestartPolicy = Field(
        default="Manual",
        description=(
            "Changes Proxmox can only apply at the next boot (pending changes) are reported in the "
            "PendingChanges condition. Manual: restart when the annotation k3sdeploy.io/restart changes. "
            "Automatic: restart the VM right away to apply them."
        ),
    )
    shutdown_timeout_seconds: int = Field(
        default=120,
        ge=0,
        le=3600,
        description="Graceful shutdown (ACPI/agent) time limit before a hard stop.",
    )
    guest_agent: GuestAgent | None = None

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(has(self.node) && has(self.allowedNodes) && size(self.allowedNodes) > 0)",
            "set node (a fixed Proxmox node) or allowedNodes (the operator picks one), not both",
            lambda m: not (m.node is not None and m.allowed_nodes),
        ),
    )


class ProxmoxVMSpec(VMSettings, ProxmoxAccess):
    """Desired state of one Proxmox VM."""

    vmid: Vmid | None = Field(
        default=None,
        description="Id for a cloned VM (default: the next free id). To adopt by id use source.existing.vmid.",
    )
    name: VmName | None = Field(
        default=None,
        description="VM name in Proxmox (default: metadata.name for clones; kept when adopting).",
    )
    source: VMSource
    cloud_init: CloudInit | None = Field(
        default=None, description="Cloud-init user, SSH keys, addresses, DNS."
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description=(
            "What happens to the VM when this object is deleted: Delete (stop and destroy with its disks), "
            "Stop (power off, keep), Retain (leave untouched). Default: Retain for adopted VMs "
            "(source.existing), Delete for clones."
        ),
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        *ProxmoxAccess.rules,
        *VMSettings.rules,
        Rule(
            "!has(self.vmid) || has(self.source.clone)",
            "spec.vmid is the id for a cloned VM; to adopt an existing VM by id use spec.source.existing.vmid",
            lambda m: m.vmid is None or m.source.clone is not None,
            field_path=".vmid",
        ),
    )

    def effective_deletion_policy(self) -> DeletionPolicy:
        """The policy in force: the explicit one, else Retain for adopted and Delete for cloned VMs."""
        if self.deletion_policy is not None:
            return self.deletion_policy
        return "Retain" if self.source.existing is not None else "Delete"


class TaskRef(StatusModel):
    """A Proxmox task the operator started and has not yet seen finish."""

    upid: str = Field(max_length=512, description="Proxmox task id (UPID:node:...).")
    action: str = Field(max_length=64, description="What the task does: clone, start, shutdown, resize, ...")
    node: str | None = Field(default=None, max_length=63, description="Proxmox node running the task.")
    started_at: datetime | None = Field(default=None, description="When the operator started the task.")


class ProxmoxVMStatus(StatusModel):
    """Observed state of the VM, written by the operator."""

    observed_generation: int | None = Field(default=None, description="metadata.generation last acted on.")
    vmid: int | None = Field(
        default=None,
        description="The VM's id; for a clone recorded before the clone is started, so a restart finds it.",
    )
    node: str | None = Field(default=None, max_length=63, description="Proxmox node the VM is on.")
    name: str | None = Field(default=None, max_length=63, description="The VM's name in Proxmox.")
    power_state: str | None = Field(
        default=None,
        max_length=32,
        description="Power state seen in Proxmox: Running, Stopped, Paused, Unknown.",
    )
    addresses: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="IP addresses the guest agent reports (after the CIDR filter), first one preferred.",
    )
    task_ref: TaskRef | None = Field(
        default=None, description="Checked on every reconcile; cleared when the task has ended."
    )
    pending_changes: list[str] = Field(
        default_factory=list,
        max_length=128,
        description="Config keys changed but waiting for a restart of the VM to take effect.",
    )
    deletion_policy: str | None = Field(
        default=None, max_length=16, description="The deletion policy in force (spec or default)."
    )
    adopted: bool | None = Field(
        default=None, description="True when the VM existed before (source.existing)."
    )
    last_sync_time: datetime | None = Field(
        default=None, description="Last time the VM was read from Proxmox."
    )
    conditions: list[Condition] = conditions_field()


class ProxmoxVM(ApiModel):
    """A Proxmox VE virtual machine managed by k3s-deploy."""

    model_config = ConfigDict(alias_generator=camel, populate_by_name=True, extra="ignore")

    api_version: Literal["k3sdeploy.io/v1alpha1"] = Field(default="k3sdeploy.io/v1alpha1", alias="apiVersion")
    kind: Literal["ProxmoxVM"] = "ProxmoxVM"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ProxmoxVMSpec
    status: ProxmoxVMStatus = Field(default_factory=ProxmoxVMStatus)
