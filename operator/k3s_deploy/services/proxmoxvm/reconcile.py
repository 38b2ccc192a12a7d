"""One reconcile pass of a ProxmoxVM: credentials -> task -> VM -> config -> power -> addresses.

Each step is idempotent and may end the pass early with :class:`~k3s_deploy.errors.NotYet` (work in flight) or an error
from the error tree (transient: retry with backoff; permanent: Stalled until the spec or the world
changes). The pass never waits on Proxmox: long tasks are recorded in ``status.taskRef``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from k3s_deploy.api.common import GROUP, VERSION
from k3s_deploy.api.proxmoxvm import PLURAL, ProxmoxVM
from k3s_deploy.errors import K3sDeployError, NotYet
from k3s_deploy.ports.kube import KubeGateway
from k3s_deploy.secrets_mask import redact
from k3s_deploy.services import ownership
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.proxmoxvm import placement
from k3s_deploy.services.proxmoxvm.agent import ensure_addresses
from k3s_deploy.services.proxmoxvm.configure import configure
from k3s_deploy.services.proxmoxvm.credentials import load_credentials
from k3s_deploy.services.proxmoxvm.inventory import Session, Sessions
from k3s_deploy.services.proxmoxvm.power import ensure_power
from k3s_deploy.services.proxmoxvm.provision import ensure_vm
from k3s_deploy.services.proxmoxvm.tasks import check_task
from k3s_deploy.services.proxmoxvm.work import (
    AGENT_READY,
    POWERED_ON,
    VM_PROVISIONED,
    Event,
    Memory,
    ObjectRef,
    Work,
)


@dataclass
class Outcome:
    """What a pass produced: the full status to write, events to post, when to look again."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    requeue_after: float | None = None  # None: at the next periodic resync
    error: K3sDeployError | None = None


def object_ref(vm: ProxmoxVM) -> ObjectRef:
    meta = vm.metadata
    return ObjectRef(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 0) or 0),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


async def owned_ref(kube: KubeGateway, vm: ProxmoxVM, memory: Memory) -> ObjectRef:
    """The object's ref with its owner verified (raises OwnerNotVerified for a forged ownerReference)."""
    uid = await ownership.owner_uid(kube, vm.metadata, memory.verified_owners)
    tag = await ownership.cluster_tag(kube, vm.metadata, uid)
    return replace(object_ref(vm), owner_uid=uid, identity_tag=tag)


async def open_session(kube: KubeGateway, sessions: Sessions, vm: ProxmoxVM) -> Session:
    spec = vm.spec
    credentials = await load_credentials(
        kube,
        str(vm.metadata.get("namespace", "")),
        spec.credentials_ref.name,
        fingerprint=spec.fingerprint,
        insecure_skip_tls_verify=spec.insecure_skip_tls_verify,
    )
    return sessions.get(credentials)


def _sibling_lister(kube: KubeGateway, obj: ObjectRef) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """Lists the ProxmoxVMs with this object's cluster and role labels (read only when placing a clone)."""

    async def list_siblings() -> list[dict[str, Any]]:
        key = placement.sibling_key(obj.namespace, obj.labels)
        if key is None:
            return []
        selector = f"{placement.LABEL_CLUSTER}={key[1]},{placement.LABEL_ROLE}={key[2]}"
        return await kube.list_objects(GROUP, VERSION, PLURAL, obj.namespace, selector)

    return list_siblings


def steps_for(work: Work) -> list[str]:
    """The step conditions Ready summarises; a VM meant to be Stopped needs no agent."""
    if work.spec.power_state == "Running":
        return [VM_PROVISIONED, POWERED_ON, AGENT_READY]
    return [VM_PROVISIONED]


async def reconcile(
    vm: ProxmoxVM,
    *,
    kube: KubeGateway,
    sessions: Sessions,
    memory: Memory,
    checkpoint: Callable[[dict[str, Any]], Awaitable[None]],
    max_backoff: float = 300.0,
    adoption: ownership.AdoptionPolicy = ownership.AdoptionPolicy(),  # noqa: B008  # frozen, shared
    wake: Callable[[], None] | None = None,
) -> Outcome:
    """Run every step once; turn the result into status + events + requeue delay."""
    obj = object_ref(vm)
    conditions = Conditions(
        [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in vm.status.conditions],  # type: ignore[misc]  # Condition dicts carry the same keys as the TypedDict
        generation=obj.generation,
    )
    # A shallow copy with fresh lists: the model may be reused by the next pass (never mutate it), and
    # the conditions live in ``conditions`` above; a deep copy was most of an idle pass's CPU.
    status = vm.status.model_copy(
        update={
            "addresses": list(vm.status.addresses),
            "pending_changes": list(vm.status.pending_changes),
            "conditions": [],
        }
    )
    status.deletion_policy = vm.spec.effective_deletion_policy()
    events: list[Event] = []
    annotations: dict[str, str] = {}
    work: Work | None = None
    requeue: float | None = None
    error: K3sDeployError | None = None
    try:
        obj = await owned_ref(kube, vm, memory)
        session = await open_session(kube, sessions, vm)

        async def save() -> None:
            assert work is not None
            await checkpoint(work.status_dict())

        work = Work(
            obj,
            vm.spec,
            status,
            conditions,
            session,
            memory,
            save,
            events,
            annotations,
            adoption=adoption,
            list_siblings=_sibling_lister(kube, obj),
            wake=wake,
        )
        if vm.status.observed_generation != obj.generation:
            # The written status will say this generation was observed whether or not this pass gets
            # to configure (a task in flight ends it first): until configure ran, the next passes
            # must still read the config and apply the new spec.
            memory.config_incomplete = True
        await check_task(work)
        found = await ensure_vm(work)
        label = "Adopted" if status.adopted else "Cloned"
        conditions.set(VM_PROVISIONED, True, label, f"VM {found.node}/{found.vmid} ({found.name or '-'})")
        status.name = found.name or status.name
        await configure(work, found)
        state = await ensure_power(work, found)
        await ensure_addresses(work, found, state)
        conditions.reconciling(False)
        conditions.stalled(False)
        memory.failures = 0
    except NotYet as pause:
        requeue = pause.after_s
        conditions.stalled(False)
        conditions.reconciling(True, pause.reason, pause.message)
    except K3sDeployError as exc:
        error = exc
        conditions.from_error(exc)
        if exc.transient:
            delay = getattr(exc, "delay", None)
            requeue = float(delay) if delay else memory.backoff(max_backoff)
        else:
            memory.failures = 0
        before = {c.type: (c.reason, c.message) for c in vm.status.conditions}
        if before.get("Stalled" if not exc.transient else "Reconciling") != (exc.reason, redact(exc.message)):
            events.append(Event("Warning", exc.reason, exc.message))  # once per new error, not per retry
    status.observed_generation = obj.generation
    status.last_sync_time = None if work is None else work.now()
    stopped = vm.spec.power_state == "Stopped" and status.power_state == "Stopped"
    conditions.summarize_ready(
        steps_for(work) if work is not None else [VM_PROVISIONED],
        ready_message="the VM is stopped, as spec.powerState asks" if stopped else "the VM matches its spec",
        ready_reason="Stopped" if stopped else "Ready",
    )
    out = status.model_dump(by_alias=True, mode="json", exclude_none=False)
    out["conditions"] = conditions.as_list()
    return Outcome(status=out, events=events, annotations=annotations, requeue_after=requeue, error=error)
