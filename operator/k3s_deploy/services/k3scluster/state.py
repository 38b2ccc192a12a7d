"""The state of one K3sCluster pass: what the phases read and change, and how progress is written.

Every phase module (children, access, bootstrap, day2, rollout) works on a :class:`ClusterPass` and
nothing else of another phase, so none of them imports the pass driver (:mod:`reconcile`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from k3s_deploy import errors
from k3s_deploy.api.k3scluster import K3sCluster
from k3s_deploy.api.k3scluster_status import ClusterNode, K3sClusterStatus, NodeRole, NodeState
from k3s_deploy.api.node_operation import NodeOperation
from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.ports.artefacts import ArtefactFetcher
from k3s_deploy.ports.channels import ChannelServer
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.ports.proxmox import ProxmoxClient, ProxmoxCredentials, VmSummary
from k3s_deploy.ports.ssh import SshRunner
from k3s_deploy.ports.target import TargetCluster
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.k3scluster import hostkeys, ipam, pools, power, scaling, tokens
from k3s_deploy.services.k3scluster.topology import ClusterRef

VMS_READY = "VMsReady"
SERVERS_READY = "ServersReady"
AGENTS_READY = "AgentsReady"
STEPS = (VMS_READY, SERVERS_READY, AGENTS_READY)

# How soon to look again while waiting for something that is on its way (VMs booting: children
# changing also wake the loop at once, so this is a fallback).
WAIT_DELAY = 3.0
# Nodes register and turn Ready within seconds of an install; a Node list is one cheap call.
NODE_WAIT_DELAY = 1.0
# Node state recorded when its install failed: the next pass installs it again.
INSTALL_FAILED: Final = "InstallFailed"


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Deps:
    objects: ClusterObjects
    ssh: SshRunner
    target: TargetCluster
    # Lists the VMs a credential sees (for discovery by tags); the runtime shares its cached inventory.
    list_vms: Callable[[ProxmoxCredentials], Awaitable[list[VmSummary]]] | None = None
    # The Proxmox client of a credential (host keys read through the guest agent).
    proxmox: Callable[[ProxmoxCredentials], ProxmoxClient] | None = None
    # The K3s release channel server (version check, channel upgrades); None: no version check.
    channels: ChannelServer | None = None
    channel_check_seconds: float = 600.0
    # Downloads air-gap artefacts for installSource.airGap.fetchFrom: Operator.
    artefacts: ArtefactFetcher | None = None
    # Pool addresses chosen by passes of this process whose children may not exist yet (shared by all).
    addresses: ipam.Claims = field(default_factory=ipam.Claims)
    # When each cluster's last whole pass in this process started, and the members it verified
    # (job_look.py: looks in between go only to those, never to an address read from status).
    whole_passes: dict[str, tuple[datetime, Mapping[str, NodeView]]] = field(default_factory=dict)


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    error: errors.K3sDeployError | None = None
    # True when the pass wrote status midway: the stored status is no longer the previous outcome.
    flushed: bool = False


@dataclass
class NodeView:
    name: str
    role: NodeRole
    adopted: bool
    vmid: int | None = None
    pve_node: str | None = None
    ip: str | None = None
    vm_ready: bool = False
    vm_ready_since: datetime | None = None  # the ProxmoxVM's Ready condition turned True then
    host_key: str | None = None
    k3s_version: str | None = None
    ready: bool = False
    server_up: bool = False
    embedded_etcd: bool = False  # a server whose K3s keeps its data in embedded etcd (not SQLite)
    kube_vip_manifest: bool = False  # the probe found the operator's kube-vip manifest there
    state: NodeState = "Pending"
    message: str | None = None
    # why the child VM holds the node back, said the way the ProxmoxVM says it (e.g. stale cloud-init)
    vm_problem: tuple[str, str] | None = None  # (reason, message)
    # registration: the agent pool (None: servers, default agents), labels and taints the spec gives
    pool: str | None = None
    node_labels: Mapping[str, str] = field(default_factory=dict)
    node_taints: tuple[str, ...] = ()
    config_digest: str | None = None  # read back from the node (node_config.DIGEST_FILE)
    operation: NodeOperation | None = None  # long work in flight (node_ops.py), kept across passes

    def as_status(self) -> ClusterNode:
        """The node's status entry (fields without a value are left out)."""
        fields: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "pool": self.pool,
            "vm": self.name,
            "vmid": self.vmid,
            "pve_node": self.pve_node,
            "ip": self.ip,
            "k3s_version": self.k3s_version,
            "ready": self.ready,
            "host_key_fingerprint": self.host_key,
            "adopted": self.adopted,
            "state": self.state,
            "message": self.message,
            "config_digest": self.config_digest,
            "operation": self.operation,
        }
        return ClusterNode(**{k: v for k, v in fields.items() if v is not None})


class ClusterPass:
    """State of one pass: the spec, the status being built, node views, Events; written by :meth:`flush`."""

    def __init__(self, body: Mapping[str, Any], deps: Deps, *, generation: int | None) -> None:
        self.model = K3sCluster.model_validate(dict(body))
        meta = body.get("metadata") or {}
        self.ref = ClusterRef(meta["name"], meta["namespace"], meta["uid"])
        self.spec = self.model.spec
        self.deps = deps
        # the status as stored, and the one this pass builds (both models: no key can be misspelt)
        self.old: K3sClusterStatus = self.model.status
        self.status: K3sClusterStatus = self.old.model_copy(deep=True)
        self.conditions = Conditions(
            [c.model_dump(by_alias=True, mode="json", exclude_unset=True) for c in self.old.conditions],  # type: ignore[misc]  # Condition dicts carry the same keys as the TypedDict
            generation=generation,
        )
        self.generation = generation
        self.events: list[Event] = []
        self.views: dict[str, NodeView] = {}
        self.recorded: dict[str, ClusterNode] = {n.name: n for n in self.old.nodes}
        self.flushed = False
        # members the spec no longer wants (with their child), and those removed in this pass
        self.surplus: dict[str, tuple[scaling.Surplus, ProxmoxVM]] = {}
        self.removed: set[str] = set()
        # the drain step of a surplus member this pass (None: drained), kept on its status entry
        self.leaving_ops: dict[str, NodeOperation | None] = {}
        # status entries of leaving members written back as they were by a pass that does not work out
        # the surplus (a paused one): their drain record survives the pause
        self.kept_leaving: list[ClusterNode] = []
        self.power_plan: power.PowerPlan | None = None
        self.replaced: set[str] = set()  # members on a new VM (the old one destroyed outside)
        agent = self.proxmox_client if deps.proxmox is not None else None
        self.hostkeys = hostkeys.HostKeys(deps.objects, self.ref, self.spec.ssh, agent=agent)
        self.tokens = tokens.JoinTokens(server="")
        self.agent_token_checked = False

    async def credentials(self) -> ProxmoxCredentials:
        """The Proxmox credentials of spec.credentialsRef."""
        from k3s_deploy.services.proxmoxvm.credentials import parse_credentials

        secret = self.spec.credentials_ref.name
        data = await self.deps.objects.read_secret(self.ref.namespace, secret)
        if data is None:
            raise errors.CredentialsError(
                f"Secret {secret!r} (spec.credentialsRef) not found in namespace {self.ref.namespace!r}",
                reason="SecretNotFound",
            )
        return parse_credentials(
            secret,
            data,
            fingerprint=self.spec.fingerprint,
            insecure_skip_tls_verify=self.spec.insecure_skip_tls_verify,
        )

    async def proxmox_client(self) -> ProxmoxClient:
        assert self.deps.proxmox is not None
        return self.deps.proxmox(await self.credentials())

    def recorded_for(self, name: str) -> ClusterNode | None:
        """What status recorded of a member's machine; nothing for a member on a new VM."""
        return None if name in self.replaced else self.recorded.get(name)

    def status_dict(self) -> dict[str, Any]:
        """The status to write: the fields the stored status had or this pass set (a field set to None
        is removed by the merge patch), and the conditions."""
        out = self.status.model_dump(by_alias=True, mode="json", exclude_unset=True)
        out["conditions"] = self.conditions.as_list()
        return out

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def leaving(self) -> list[ClusterNode]:
        """Status entries of surplus members not removed yet (their pinned host keys must survive)."""
        out = []
        for name in self.surplus:
            if name in self.removed:
                continue
            entry = self.recorded.get(name) or ClusterNode(name=name, role=self.surplus[name][0].role)
            update: dict[str, Any] = {"state": "Removing", "ready": False}
            if name in self.leaving_ops:
                update["operation"] = self.leaving_ops[name]
            out.append(entry.model_copy(update=update))
        return out

    def store_nodes(self) -> None:
        self.status.nodes = [v.as_status() for v in self.views.values()] + self.leaving() + self.kept_leaving
        servers = [v for v in self.views.values() if v.role == "server"]
        agents = [v for v in self.views.values() if v.role == "agent"]
        self.status.ready_servers = sum(v.ready for v in servers)
        self.status.ready_agents = sum(v.ready for v in agents)
        versions = sorted({v.k3s_version for v in self.views.values() if v.k3s_version}, key=version_key)
        if versions:
            self.status.k3s_version = versions[0]
        pools.store(self.status, self.spec, self.views.values())

    async def flush(self) -> None:
        """Write progress that must survive an operator crash before the next risky step."""
        self.store_nodes()
        self.summarize()
        self.flushed = True
        await self.deps.objects.patch_cluster_status(self.ref.namespace, self.ref.name, self.status_dict())

    def summarize(self) -> None:
        """Step conditions and Ready as the nodes about to be written show them: a role whose nodes are
        not all listed and Ready is not Ready, whatever an earlier pass concluded."""
        listed = [n for n in self.status.nodes if n.state != "Removing"]
        for role, cond in (("server", SERVERS_READY), ("agent", AGENTS_READY)):
            if not self.conditions.is_true(cond):
                continue
            mine = [n for n in listed if n.role == role]
            desired = self.status.desired_servers if role == "server" else self.status.desired_agents
            want = len(mine) if desired is None else desired
            late = [n.name for n in mine if not n.ready]
            ready = len(mine) - len(late)
            if late or ready < want:
                waiting = ", ".join(late) or f"{want - ready} more {role}(s) to join"
                self.conditions.set(
                    cond, False, "NodesNotReady", f"{ready}/{want} {role}s Ready; waiting for {waiting}"
                )
        plan = self.power_plan
        if self.spec.power_state == "Stopped" and plan is not None and plan.settled:
            # stopped as the spec asks: the desired state, so Ready (kstatus Current, Argo CD Healthy)
            self.conditions.summarize_ready((), ready_reason="Stopped", ready_message=plan.message)
        else:
            self.conditions.summarize_ready(STEPS, ready_message=self.ready_message())

    def ready_message(self) -> str:
        return (
            f"{self.status.ready_servers or 0} servers and {self.status.ready_agents or 0} agents Ready"
            + (f" at {self.status.k3s_version}" if self.status.k3s_version else "")
        )


M = TypeVar("M", bound=BaseModel)


def to_model(cls: type[M], raw: Mapping[str, Any]) -> M:
    """A status model from a planner's dict; a key the model does not know is a bug, not data."""
    known = {field.alias or name for name, field in cls.model_fields.items()}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return cls.model_validate(raw)


def as_dict(model: BaseModel | None) -> dict[str, Any] | None:
    """A status model as its wire dict (for the pure planners that take one)."""
    return None if model is None else model.model_dump(by_alias=True, mode="json", exclude_unset=True)


def as_vm(child: Mapping[str, Any]) -> ProxmoxVM:
    """A child as the ProxmoxVM model (what the cluster reads of it is typed, like its own status)."""
    try:
        return ProxmoxVM.model_validate(child)
    except ValidationError as exc:
        name = (child.get("metadata") or {}).get("name")
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise errors.PermanentError(
            f"ProxmoxVM {name} does not validate ({where}: {first.get('msg')}); fix or delete it",
            reason="VMInvalid",
        ) from None


def fold_errors(results: Sequence[object]) -> list[errors.K3sDeployError]:
    """The operator errors among the results of parallel work, the most telling first (permanent
    before transient); anything else that failed (a bug) is raised as it is."""
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        if not isinstance(failure, errors.K3sDeployError):
            raise failure
    known = [f for f in failures if isinstance(f, errors.K3sDeployError)]
    return [f for f in known if not f.transient] + [f for f in known if f.transient]


def raise_first(results: Sequence[object]) -> None:
    """Re-raise the most telling failure of parallel work (see :func:`fold_errors`)."""
    folded = fold_errors(results)
    if folded:
        raise folded[0]


def version_key(version: str) -> tuple[int, ...]:
    core = version.lstrip("v").split("+", 1)[0].split("-", 1)[0]
    try:
        return tuple(int(p) for p in core.split("."))
    except ValueError:
        return (0,)
