"""Pure planning: which VM to adopt or clone from, where, and which config keys must change.

No I/O here, so every rule is unit-tested directly.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from k3s_deploy.api.proxmoxvm import CloudInit, ProxmoxVMSpec, VMSelector
from k3s_deploy.errors import InvalidSpec, ProxmoxNotFound
from k3s_deploy.ports.proxmox import GuestInterface, NodeSummary, VmSummary
from k3s_deploy.services.ownership import is_ownership_tag
from k3s_deploy.services.proxmoxvm import placement
from k3s_deploy.services.proxmoxvm.placement import Choice

GIB = 1024**3
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": GIB, "T": 1024**4}
CLOUD_INIT_KEYS = frozenset({"ciuser", "sshkeys", "nameserver", "searchdomain"})
_IPCONFIG_KEY = re.compile(r"^ipconfig\d+$")


def is_cloud_init_key(key: str) -> bool:
    """A config key that lives on the cloud-init drive (ipconfigN for any interface index N)."""
    return key in CLOUD_INIT_KEYS or _IPCONFIG_KEY.match(key) is not None


def describe(vms: Iterable[VmSummary]) -> str:
    return ", ".join(f"{vm.node}/{vm.vmid} ({vm.name or 'unnamed'})" for vm in vms) or "none"


def matches(vm: VmSummary, selector: VMSelector) -> bool:
    if selector.vmid is not None and vm.vmid != selector.vmid:
        return False
    if selector.name is not None and vm.name != selector.name:
        return False
    return set(selector.tags) <= vm.tags


def select_existing(vms: Sequence[VmSummary], selector: VMSelector, node: str | None) -> VmSummary:
    """The one VM to adopt; zero or several matches is an error listing the candidates."""
    found = [
        vm for vm in vms if not vm.template and matches(vm, selector) and (node is None or vm.node == node)
    ]
    if not found:
        raise ProxmoxNotFound(
            f"no VM matches source.existing {selector.to_k8s()}"
            + (f" on node {node}" if node else "")
            + "; check vmid/name/tags and that the token may see the VM (VM.Audit)",
            reason="VMNotFound",
        )
    if len(found) > 1:
        raise InvalidSpec(
            f"{len(found)} VMs match source.existing {selector.to_k8s()}: {describe(found)}; "
            "narrow the selector (vmid, name or more tags) so exactly one matches",
            reason="AmbiguousVM",
        )
    return found[0]


def select_template(vms: Sequence[VmSummary], selector: VMSelector) -> list[VmSummary]:
    """Every copy of the template (a name or tags may match one copy per node)."""
    found = [vm for vm in vms if matches(vm, selector)]
    templates = [vm for vm in found if vm.template]
    candidates = templates or found
    if not candidates:
        raise ProxmoxNotFound(
            f"no template matches source.clone.template {selector.to_k8s()}; create it or fix the selector",
            reason="TemplateNotFound",
        )
    names = {vm.name for vm in candidates}
    if len(names) > 1:
        raise InvalidSpec(
            f"source.clone.template {selector.to_k8s()} matches different VMs: {describe(candidates)}; "
            "narrow the selector",
            reason="AmbiguousTemplate",
        )
    return sorted(candidates, key=lambda vm: vm.vmid)


def choose_placement(
    templates: Sequence[VmSummary],
    nodes: Sequence[NodeSummary],
    spec: ProxmoxVMSpec,
    *,
    siblings: Sequence[str] = (),
    shared: Mapping[int, bool] | None = None,
    keep: str | None = None,
) -> tuple[VmSummary, Choice]:
    """Pick the template copy and the target node.

    Explicit ``node`` wins; ``keep`` (the node an unfinished clone was recorded on) stays; else the
    online node of ``allowedNodes`` (or of the cluster) the template can reach, chosen by
    :func:`placement.choose_node` against the nodes of the ``siblings``. A template copy on the target
    node is used when there is one (works with local storage); otherwise the first copy with ``target``.
    """
    online = {n.node: n for n in nodes if n.status == "online"}
    if spec.node is not None:
        if spec.node not in online:
            raise ProxmoxNotFound(f"node {spec.node!r} is not an online Proxmox node", reason="NodeNotFound")
        choice = Choice(spec.node)
    else:
        allowed = (
            [online[n] for n in spec.allowed_nodes if n in online]
            if spec.allowed_nodes
            else list(online.values())
        )
        if not allowed:
            raise ProxmoxNotFound(
                f"none of the allowed nodes {list(spec.allowed_nodes)} is online", reason="NodeNotFound"
            )
        fits = [n for n in allowed if placement.reachable(templates, shared or {}, n.node)]
        if keep is not None and keep in {n.node for n in fits}:
            choice = Choice(keep)
        else:
            choice = placement.choose_node(
                fits or allowed,
                siblings,
                mode=spec.placement,
                local={t.node for t in templates},
                unreachable=[n.node for n in allowed if n not in fits] if fits else (),
            )
    same_node = [t for t in templates if t.node == choice.node]
    return (same_node or list(templates))[0], choice


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text.strip().upper())
    if not match:
        raise ValueError(f"unparsable disk size {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def disk_size(config: Mapping[str, Any], disk: str) -> int:
    value = config.get(disk)
    if value is None:
        raise ProxmoxNotFound(
            f"the VM has no disk {disk!r}; set resources.disk to one of its disks", reason="DiskNotFound"
        )
    for part in str(value).split(","):
        key, _, size = part.partition("=")
        if key == "size":
            return parse_size(size)
    raise ProxmoxNotFound(f"disk {disk!r} reports no size", reason="DiskNotFound")


def ipconfig_value(cloud_init: CloudInit) -> str | None:
    ip = cloud_init.ip_config
    if ip is None:
        return None
    if ip.dhcp:
        return "ip=dhcp"
    value = f"ip={ip.address}"
    return value + f",gw={ip.gateway}" if ip.gateway else value


def _kv(text: str) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in text.split(",") if part)


def _norm_keys(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def wanted_tags(spec: ProxmoxVMSpec, owner_tag: str | None) -> set[str]:
    """spec.tags plus our ownership tag; another owner's tag in spec.tags is never written (a tenant
    could otherwise make its VM pass for another owner's)."""
    tags = {t.lower() for t in spec.tags if not is_ownership_tag(t)}
    return tags | ({owner_tag} if owner_tag else set())


@dataclass
class ConfigPlan:
    changes: dict[str, Any] = field(default_factory=dict)
    resize: tuple[str, str] | None = None  # (disk, size)

    @property
    def cloud_init_changed(self) -> bool:
        return any(is_cloud_init_key(key) for key in self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes) or self.resize is not None


def plan_config(
    spec: ProxmoxVMSpec, config: Mapping[str, Any], *, name: str | None, owner_tag: str | None
) -> ConfigPlan:
    """The keys whose value differs from the spec; unset spec fields change nothing."""
    plan = ConfigPlan()
    res = spec.resources
    if res is not None:
        for key, want, default in (
            ("cores", res.cores, 1),
            ("sockets", res.sockets, 1),
            ("memory", res.memory_mib, 512),
        ):
            if want is not None and int(config.get(key, default)) != want:
                plan.changes[key] = want
        if res.disk_gib is not None:
            have = disk_size(config, res.disk)
            want_bytes = res.disk_gib * GIB
            if want_bytes < have:
                raise InvalidSpec(
                    f"disk {res.disk} is {have / GIB:g} GiB; shrinking to {res.disk_gib} GiB is not supported "
                    "by Proxmox: set diskGiB to at least the current size",
                    reason="DiskShrinkRefused",
                )
            if want_bytes > have:
                plan.resize = (res.disk, f"{res.disk_gib}G")
    if name is not None and config.get("name") != name:
        plan.changes["name"] = name
    have_tags = {t for t in re.split(r"[;, ]+", str(config.get("tags", "")).lower()) if t}
    want_tags = have_tags | wanted_tags(spec, owner_tag)
    if want_tags != have_tags:
        plan.changes["tags"] = ";".join(sorted(want_tags))
    ci = spec.cloud_init
    if ci is not None:
        if ci.user is not None and config.get("ciuser") != ci.user:
            plan.changes["ciuser"] = ci.user
        if ci.ssh_authorized_keys and _norm_keys(str(config.get("sshkeys", ""))) != [
            k.strip() for k in ci.ssh_authorized_keys
        ]:
            plan.changes["sshkeys"] = "\n".join(k.strip() for k in ci.ssh_authorized_keys)
        ipconfig = ipconfig_value(ci)
        key = f"ipconfig{ci.interface}"
        if ipconfig is not None and _kv(str(config.get(key, ""))) != _kv(ipconfig):
            if f"net{ci.interface}" not in config:
                raise InvalidSpec(
                    f"cloudInit.interface {ci.interface} needs a network device net{ci.interface}, which the "
                    "VM lacks; add it to the template or VM, or choose the index of an existing one",
                    reason="InterfaceNotFound",
                )
            plan.changes[key] = ipconfig
        if ci.nameservers and str(config.get("nameserver", "")).split() != list(ci.nameservers):
            plan.changes["nameserver"] = " ".join(ci.nameservers)
        if ci.search_domain is not None and config.get("searchdomain") != ci.search_domain:
            plan.changes["searchdomain"] = ci.search_domain
    return plan


def wants_cloud_init(spec: ProxmoxVMSpec) -> bool:
    """True when the spec sets any cloud-init key (only then does the drive matter to us)."""
    ci = spec.cloud_init
    if ci is None:
        return False
    return bool(
        ci.user is not None
        or ci.ssh_authorized_keys
        or ci.ip_config is not None
        or ci.nameservers
        or ci.search_domain is not None
    )


_DRIVE_KEY = re.compile(r"^(ide|sata|scsi|virtio)\d+$")


def has_cloud_init_drive(config: Mapping[str, Any]) -> bool:
    """A cloud-init drive is a disk whose volume is ``<storage>:vm-<vmid>-cloudinit`` (or a cloudinit volume)."""
    return any(
        _DRIVE_KEY.match(key) and "cloudinit" in str(value).split(",")[0] for key, value in config.items()
    )


def stale_cloud_init(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys of ``GET .../cloudinit`` whose config value is newer than the drive (added, changed, removed).

    PVE lists ``value`` (what the drive was generated from) and ``pending`` (the config's value when it
    changed since); a key changed back to the drive's value may still carry an equal ``pending``.
    """
    stale = []
    for entry in entries:
        changed = "pending" in entry and entry.get("pending") != entry.get("value")
        if entry.get("key") and (entry.get("delete") or changed):
            stale.append(str(entry["key"]))
    return sorted(stale)


def inventory_drift(
    spec: ProxmoxVMSpec, vm: VmSummary, *, name: str | None, owner_tag: str | None
) -> list[str]:
    """What the shared VM list already shows to differ from the spec (no extra call needed)."""
    drift: list[str] = []
    res = spec.resources
    if res is not None:
        if res.cores is not None and vm.maxcpu and vm.maxcpu != res.cores * (res.sockets or 1):
            drift.append("cpu")
        if res.memory_mib is not None and vm.maxmem and vm.maxmem != res.memory_mib * 1024**2:
            drift.append("memory")
        if res.disk_gib is not None and vm.maxdisk and vm.maxdisk < res.disk_gib * GIB:
            drift.append("disk")
    if name is not None and vm.name and vm.name != name:
        drift.append("name")
    if not wanted_tags(spec, owner_tag) <= vm.tags:
        drift.append("tags")
    return drift


_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_LOOPBACK_MAC = "00:00:00:00:00:00"


def usable_addresses(interfaces: Sequence[GuestInterface], cidr: str | None = None) -> list[str]:
    """Addresses worth reporting: not the loopback interface, not 127.0.0.1/::1, not link-local.

    Only the loopback *interface* (``lo`` / all-zero MAC) and the two loopback host addresses are
    skipped, not every 127.0.0.0/8 address: a guest may legitimately carry one elsewhere.
    """
    network = ipaddress.ip_network(cidr, strict=False) if cidr else None
    out: list[str] = []
    for iface in interfaces:
        if iface.name == "lo" or iface.mac == _LOOPBACK_MAC:
            continue
        for raw in iface.addresses:
            try:
                addr = ipaddress.ip_address(raw.split("/")[0])
            except ValueError:
                continue
            if str(addr) in ("127.0.0.1", "::1") or any(addr in net for net in _LINK_LOCAL):
                continue
            if network is not None and (addr.version != network.version or addr not in network):
                continue
            if str(addr) not in out:
                out.append(str(addr))
    return out
