"""The members' ProxmoxVM children: create or update them as the spec wants, read each one's state
into a node view, and say whether every VM is ready for SSH."""

from __future__ import annotations

from typing import Literal

from k3s_deploy import errors, netpolicy
from k3s_deploy.api.common import Condition, condition
from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.k3scluster import day2, spread
from k3s_deploy.services.k3scluster.desired import Desired, plan, spec_drift
from k3s_deploy.services.k3scluster.recover import addresses_in_proxmox
from k3s_deploy.services.k3scluster.state import (
    AGENTS_READY,
    SERVERS_READY,
    VMS_READY,
    WAIT_DELAY,
    ClusterPass,
    NodeView,
    as_vm,
)
from k3s_deploy.services.proxmoxvm.work import AGENT_READY, CLOUD_INIT_STALE


async def discovered_vms(r: ClusterPass) -> list[VmSummary] | None:
    """The Proxmox VM list when members are discovered by tags (a whole pass and a paused one)."""
    d = r.spec.discovery
    if d is None or d.tags is None:
        return None
    if r.deps.list_vms is None:
        raise errors.InvalidSpec("discovery by tags needs a Proxmox connection", reason="NoProxmox")
    return await r.deps.list_vms(await r.credentials())


async def ensure_children(r: ClusterPass, d2: day2.Day2) -> Desired:
    existing = {c["metadata"]["name"]: c for c in await r.deps.objects.list_children(*_ns_name(r))}
    discovered = await discovered_vms(r)
    want = await plan(
        r.ref,
        r.spec,
        objects=r.deps.objects,
        claims=r.deps.addresses,
        children=existing.values(),
        discovered_vms=discovered,
        in_proxmox=await addresses_in_proxmox(r, existing),
    )
    r.status.ip_allocations = dict(want.static_ips)  # a cache: the children's specs are the record
    r.status.desired_servers = sum(m.role == "server" for m in want.members)
    r.status.desired_agents = sum(m.role == "agent" for m in want.members)
    if r.status.desired_servers == 0:
        raise errors.InvalidSpec(
            "discovery found no server VM: tag at least one VM with every tag in spec.discovery.tags.servers",
            reason="NoServersFound",
        )
    vms = {name: as_vm(child) for name, child in existing.items()}
    d2.prepare_children(want, vms)
    for member in want.members:
        manifest = want.manifests[member.name]
        child = existing.get(member.name)
        if child is None:
            child = await r.deps.objects.create_child(manifest)
            verb = "Adopting" if member.adopted else "Creating"
            r.event("Normal", "VMCreated", f"{verb} ProxmoxVM {member.name} ({member.role})")
            existing[member.name] = child
            vms[member.name] = as_vm(child)
        else:
            refs = child.get("metadata", {}).get("ownerReferences") or []
            if not any(ref.get("uid") == r.ref.uid for ref in refs):
                raise errors.InvalidSpec(
                    f"ProxmoxVM {member.name} exists but belongs to something else; rename or delete it",
                    reason="NameConflict",
                )
            drift = spec_drift(manifest["spec"], child.get("spec") or {})
            if drift:
                await r.deps.objects.patch_child_spec(r.ref.namespace, member.name, drift)
                r.event("Normal", "VMUpdated", f"Updated ProxmoxVM {member.name}: {', '.join(sorted(drift))}")
        view = r.views[member.name] = _view(
            r, d2, member.name, member.role, member.adopted, vms[member.name], want
        )
        view.pool, view.node_labels, view.node_taints = member.pool, member.node_labels, member.node_taints
    spread.report(r.conditions, [existing[m.name] for m in want.members], r.event)
    return want


def _ns_name(r: ClusterPass) -> tuple[str, str]:
    return r.ref.namespace, r.ref.name


def _view(
    r: ClusterPass,
    d2: day2.Day2,
    name: str,
    role: Literal["server", "agent"],
    adopted: bool,
    vm: ProxmoxVM,
    want: Desired,
) -> NodeView:
    st = vm.status
    recorded = r.recorded.get(name)
    view = NodeView(name=name, role=role, adopted=adopted)
    view.vmid = st.vmid
    view.pve_node = st.node
    addresses = st.addresses
    view.ip = want.static_ips.get(name) or (addresses[0] if addresses else None)
    if view.ip and (problem := netpolicy.node_address_problem(view.ip)):
        raise errors.AddressRefused(
            f"ProxmoxVM {name}: its address {view.ip} is {problem}; a node is never contacted there "
            "(the address comes from the ProxmoxVM's status or spec.network.ipPool)",
            reason="NodeAddressRefused",
        )
    replaced = d2.vm_replaced(view, recorded)
    if not replaced and recorded is not None:
        # what was learned from this machine stays until it is looked at again
        view.host_key = recorded.host_key_fingerprint
        view.k3s_version = recorded.k3s_version
        view.operation = recorded.operation
    stalled = condition(st.conditions, "Stalled")
    if stalled is not None and stalled.status == "True":
        raise errors.PermanentError(
            f"ProxmoxVM {name}: {stalled.message}", reason=stalled.reason or "VMStalled"
        )
    ready = condition(st.conditions, "Ready")
    view.vm_ready = bool(ready is not None and ready.status == "True" and view.ip)
    view.vm_ready_since = ready.last_transition_time if view.vm_ready and ready is not None else None
    view.vm_problem = _vm_problem(st.conditions)
    if not view.vm_ready:
        view.state = "Provisioning"
        view.message = (ready.message if ready else None) or ("no address yet" if not view.ip else None)
        if view.vm_problem:
            view.message = f"{view.vm_problem[0]}: {view.vm_problem[1]}"
        if replaced:
            view.state = day2.VM_REPLACED
            view.message = "its VM was destroyed outside the operator; waiting for the new VM"
    else:
        view.state = "VMReady"
        view.ready = recorded is not None and recorded.ready and not replaced  # last seen, until health looks
    return view


def check_vms(r: ClusterPass, d2: day2.Day2) -> None:
    """VMsReady; ends the pass (NotYet) while a VM is not ready for SSH."""
    pending = [v for v in r.views.values() if not v.vm_ready]
    total = len(r.views)
    troubled = [v for v in r.views.values() if v.vm_problem]
    why = "; ".join(
        f"ProxmoxVM {v.name}: {v.vm_problem[1]} ({v.vm_problem[0]})" for v in troubled[:3] if v.vm_problem
    )
    reason = troubled[0].vm_problem[0] if troubled and troubled[0].vm_problem else "WaitingForVMs"
    if pending:
        r.status.phase = "Provisioning"
        names = ", ".join(v.name for v in pending[:5])
        message = f"{total - len(pending)}/{total} VMs ready; waiting for {names}" + (
            f"; {why}" if why else ""
        )
        r.conditions.set(VMS_READY, False, reason, message)
        r.conditions.set(SERVERS_READY, "Unknown", "WaitingForVMs", "VMs are not ready yet")
        r.conditions.set(AGENTS_READY, "Unknown", "WaitingForVMs", "VMs are not ready yet")
        r.conditions.reconciling(True, "WaitingForVMs", message)
        d2.report_drift()
        raise errors.NotYet(WAIT_DELAY, "WaitingForVMs", message)
    if troubled:
        # running, but not as the spec says: the node may still work, so the pass goes on
        r.conditions.set(VMS_READY, False, reason, f"{total} VMs running; {why}")
        return
    r.conditions.set(VMS_READY, True, "VMsReady", f"{total} VMs running with addresses")


def _vm_problem(conds: list[Condition]) -> tuple[str, str] | None:
    """(reason, message) of a child VM condition that explains why its node cannot progress: a stale
    cloud-init drive (a restart needed, or reboots that did not help), or a repair reboot under way."""
    stale = condition(conds, CLOUD_INIT_STALE)
    if stale is not None and stale.status == "True":
        return CLOUD_INIT_STALE, f"{stale.reason or 'Stale'}: {stale.message or ''}".rstrip(": ")
    agent = condition(conds, AGENT_READY)
    if agent is not None and agent.status == "False" and agent.reason == CLOUD_INIT_STALE:
        return CLOUD_INIT_STALE, agent.message or "rebooting to rebuild its cloud-init drive"
    return None
