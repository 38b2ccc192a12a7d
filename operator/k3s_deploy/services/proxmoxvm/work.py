"""What one reconcile pass carries between its steps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from k3s_deploy.api.proxmoxvm import ProxmoxVMSpec, ProxmoxVMStatus, TaskRef
from k3s_deploy.errors import NotYet, backoff
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.ownership import AdoptionPolicy, ownership_tag
from k3s_deploy.services.proxmoxvm.inventory import Session, Snapshot
from k3s_deploy.services.proxmoxvm.taskwatch import TASK_POLL, WAKE_FALLBACK

RESTART_ANNOTATION = "k3sdeploy.io/restart"
RESTART_HANDLED_ANNOTATION = "k3sdeploy.io/restart-handled"
ORPHAN_ANNOTATION = "k3sdeploy.io/orphan"

# Condition types of this controller (Ready, Reconciling, Stalled come from services.conditions).
VM_PROVISIONED = "VMProvisioned"
POWERED_ON = "PoweredOn"
AGENT_READY = "AgentReady"
PENDING_CHANGES = "PendingChanges"
CLOUD_INIT_STALE = "CloudInitStale"
DELETING = "Deleting"

BOOT_TOLERANCE = 30.0  # seconds of clock noise between two list reads of the same boot


def same_boot(a: float | None, b: float | None) -> bool:
    """Two boot times (wall clock minus uptime) that name the same boot of a VM."""
    return a is not None and b is not None and abs(a - b) <= BOOT_TOLERANCE


@dataclass(frozen=True)
class ObjectRef:
    """The Kubernetes side of the object: identity and metadata the steps need."""

    name: str
    namespace: str
    uid: str
    generation: int
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    owner_uid: str = ""  # verified by services.ownership.owner_uid; empty: this object's own uid
    identity_tag: str = ""  # from the verified cluster's stable id (services.ownership.cluster_tag)

    @property
    def owner_tag(self) -> str:
        """The Proxmox tag that marks VMs we create: the verified cluster's stable id for its children,
        else the owner's uid."""
        return self.identity_tag or self.uid_tag

    @property
    def uid_tag(self) -> str:
        """The tag derived from the owner's uid (VMs tagged before the cluster had a stable id)."""
        return ownership_tag(self.owner_uid or self.uid)

    def owns(self, tags: Collection[str]) -> bool:
        """Whether a VM's tags carry one of this object's ownership tags."""
        return self.owner_tag in tags or self.uid_tag in tags

    @property
    def owner_marker(self) -> str:
        """Written into the clone's description so an unfinished clone is recognised after a crash."""
        return f"k3sdeploy-owner={self.uid}"


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Memory:
    """Per-object facts kept in operator memory only (lost on restart, which just costs a re-read)."""

    boot_time: float | None = None
    address_read_generation: int | None = None
    address_vmid: int | None = None  # the VM the addresses were read from (a re-clone gets a new one)
    failures: int = 0  # consecutive transient failures, for backoff
    config_incomplete: bool = False  # a configure step began and did not finish: read the config again
    cloud_init_boot: float | None = None  # the boot whose cloud-init drive was last checked ...
    cloud_init_generation: int | None = None  # ... and the generation it was checked at
    stale_reboots: int = 0  # reboots for stale cloud-init since the drive was last found current
    verified_owners: set[str] = field(default_factory=set)  # K3sCluster uids checked in this namespace
    live_state: tuple[VmSummary, str] | None = None  # status/current's answer for this list entry
    agent_wait_since: float | None = None  # epoch seconds the wait for this boot's agent began
    list_after: float | None = None  # the shared VM list must be sent after this (inventory clock)
    cloud_init_started: int | None = None  # generation whose config this process confirmed, then started
    write_in_doubt: bool = False  # a config write failed: it may still land after a later start
    cloned_here: int | None = None  # the vmid this process cloned: every write of ours to it is known

    def backoff(self, cap: float) -> float:
        """5, 10, 20, 40 ... seconds, at most ``cap``."""
        self.failures += 1
        return backoff(self.failures, cap)


@dataclass
class Work:
    obj: ObjectRef
    spec: ProxmoxVMSpec
    status: ProxmoxVMStatus
    conditions: Conditions
    session: Session
    memory: Memory
    checkpoint: Callable[[], Awaitable[None]]
    events: list[Event] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    adoption: AdoptionPolicy = field(default_factory=AdoptionPolicy)
    # The sibling ProxmoxVMs (same cluster and role labels) as the apiserver has them; None: no siblings.
    list_siblings: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
    wake: Callable[[], None] | None = None  # runs this object's next pass now (None: nobody can)
    _configs: dict[int, dict[str, Any]] = field(default_factory=dict)  # read in this pass
    finished: str | None = None  # the action of the task this pass found succeeded (tasks.py)
    config_confirmed: bool = False  # this pass read the config and brought it to the spec (configure.py)

    async def vm_config(self, vm: VmSummary) -> dict[str, Any]:
        """The VM's config, read once per pass (the ownership check and configure both need it)."""
        config = self._configs.get(vm.vmid)
        if config is None:
            config = self._configs[vm.vmid] = await self.session.client.vm_config(vm.node, vm.vmid)
        return config

    def changed(self, at: float | None = None) -> None:
        """This object changed its VM, or saw its task end, at ``at`` (now if None): its next look at
        the shared VM list must be a read sent after that; other objects' looks are not affected."""
        at = self.session.inventory.clock() if at is None else at
        self.memory.list_after = max(at, self.memory.list_after or at)

    async def listed(self, *, fresh: bool = False, max_age: float | None = None) -> Snapshot:
        """The shared VM list as this object must see it (see :meth:`changed`)."""
        return await self.session.inventory.get(fresh=fresh, after=self.memory.list_after, max_age=max_age)

    def config_changed(self, vmid: int) -> None:
        """We wrote the VM's config: a later read in this pass must ask Proxmox again."""
        self._configs.pop(vmid, None)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    @property
    def desired_name(self) -> str | None:
        """The VM name we enforce: spec.name, or metadata.name for clones; adopted VMs keep theirs."""
        if self.spec.name:
            return self.spec.name
        return self.obj.name if self.spec.source.clone is not None else None

    @property
    def cloned(self) -> bool:
        return self.spec.source.clone is not None

    async def start_task(self, action: str, node: str, upid: str, message: str) -> NoReturn:
        """Remember an in-flight task in status and end the pass; the next pass checks it."""
        self.status.task_ref = TaskRef(upid=upid, action=action, node=node, started_at=self.now())
        self.changed()
        self.event("Normal", action.capitalize() + "Started", message)
        self.wait_for_task(node, upid, f"{message} (task {upid})")

    def wait_for_task(self, node: str, upid: str, message: str) -> NoReturn:
        """End the pass while the task runs: the node's task poller wakes this object when it ends
        (no pass runs meanwhile); without a way to wake it, look again in a second."""
        if self.wake is None:
            raise NotYet(TASK_POLL, "TaskRunning", message)
        self.session.tasks.watch(node, upid, self.wake)
        raise NotYet(WAKE_FALLBACK, "TaskRunning", message)

    def status_dict(self) -> dict[str, Any]:
        out = self.status.model_dump(by_alias=True, mode="json", exclude_none=False)
        out["conditions"] = self.conditions.as_list()
        return out
