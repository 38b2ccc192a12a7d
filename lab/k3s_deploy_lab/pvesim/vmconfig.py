"""Qemu config semantics: tags, MACs, disks and sizes, which keys apply at once on a running VM."""

from __future__ import annotations

import re
import secrets
import uuid

from k3s_deploy_lab.pvesim.formats import split_list

DISK_RE = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")
NET_RE = re.compile(r"^net\d+$")
# Applied at once even on a running VM (qemu-server: "fast plug" options and cloud-init keys).
ALWAYS_NOW = {"name", "description", "onboot", "tags", "protection", "startup", "lock", "hookscript",
              "ciuser", "cipassword", "citype", "cicustom", "ciupgrade", "sshkeys", "nameserver",
              "searchdomain"}  # fmt: skip
DEFAULT_HOTPLUG = ("network", "disk", "usb")
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3")


def normalize_tags(value: str) -> str:
    """Lower-case, de-duplicate, sort and join with ';' (what PVE stores)."""
    return ";".join(sorted({t.lower() for t in split_list(value)}))


def tag_list(value: str | None) -> list[str]:
    return [t for t in (value or "").split(";") if t]


def new_mac() -> str:
    """A fresh MAC in Proxmox's BC:24:11 OUI."""
    tail = secrets.token_bytes(3)
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in tail)


def new_smbios_uuid() -> str:
    return f"uuid={uuid.uuid4()}"


def net_mac(value: str) -> str | None:
    """The MAC of a `net0` value such as `virtio=BC:24:11:..,bridge=vmbr0`."""
    for part in value.split(","):
        key, _, val = part.partition("=")
        if key in NIC_MODELS or key == "macaddr":
            return val.upper() if val else None
    return None


def with_new_mac(value: str) -> str:
    """Give a NIC definition a fresh MAC (clone, or a net0 set without one)."""
    parts = value.split(",")
    first = parts[0]
    model = first.partition("=")[0] if first.partition("=")[0] in NIC_MODELS else "virtio"
    rest = [p for p in parts if p.partition("=")[0] not in NIC_MODELS and p.partition("=")[0] != "macaddr"]
    rest = [p for p in rest if p.partition("=")[0] != "model"]
    return ",".join([f"{model}={new_mac()}", *rest])


def ensure_mac(value: str) -> str:
    return value if net_mac(value) else with_new_mac(value)


SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
_UNIT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    m = SIZE_RE.match(text)
    if not m:
        raise ValueError(f"invalid size '{text}'")
    return int(float(m.group(1)) * _UNIT[m.group(2)])


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size % _UNIT[unit] == 0:
            return f"{size // _UNIT[unit]}{unit}"
    return str(size)


def disk_volume(value: str) -> str:
    """`local-lvm:vm-100-disk-0,size=32G` -> `local-lvm:vm-100-disk-0`."""
    return value.split(",", 1)[0]


def disk_size(value: str) -> int:
    for part in value.split(",")[1:]:
        key, _, val = part.partition("=")
        if key == "size":
            return parse_size(val)
    return 0


def set_disk_size(value: str, size: int) -> str:
    parts = [p for p in value.split(",") if not p.startswith("size=")]
    return ",".join([*parts, f"size={format_size(size)}"])


def is_cdrom(value: str) -> bool:
    return "media=cdrom" in value.split(",") or disk_volume(value) in ("none", "cdrom")


def disks(config: dict[str, str]) -> dict[str, str]:
    """Disk keys (not CD-ROMs; the cloud-init drive counts as a disk for storage rules)."""
    return {k: v for k, v in config.items() if DISK_RE.match(k) and (not is_cdrom(v) or "cloudinit" in v)}


def _owner(volume: str) -> int | None:
    """The vmid owning a volume (`local-lvm:base-9001-disk-0/vm-700-disk-0` -> 700)."""
    match = re.search(r"(?:vm|base)-(\d+)-", volume.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def remove_key(config: dict[str, str], key: str, vmid: int, *, force: bool = False) -> None:
    """Delete ``key`` as PVE does: a disk of this VM is detached and kept as ``unusedN`` unless
    ``force``; a cloud-init drive, a CD-ROM, an ``unusedN`` entry or any other key just goes."""
    value = config.pop(key, None)
    if value is None or force or not DISK_RE.match(key) or is_cdrom(value) or "cloudinit" in value:
        return
    volume = disk_volume(value)
    if _owner(volume) != vmid or volume in (v for k, v in config.items() if k.startswith("unused")):
        return
    free = next(i for i in range(256) if f"unused{i}" not in config)
    config[f"unused{free}"] = volume


def storages_used(config: dict[str, str]) -> set[str]:
    out = set()
    for value in disks(config).values():
        volume = disk_volume(value)
        if ":" in volume:
            out.add(volume.split(":", 1)[0])
    return out


def hotpluggable(key: str, config: dict[str, str]) -> bool:
    """True when a change to ``key`` takes effect at once on a running VM."""
    if key in ALWAYS_NOW or key.startswith("ipconfig"):
        return True
    enabled = split_list(
        config.get("hotplug", ",".join(DEFAULT_HOTPLUG)).replace("1", ",".join(DEFAULT_HOTPLUG))
    )
    if NET_RE.match(key):
        return "network" in enabled
    if DISK_RE.match(key) or key.startswith("unused"):
        return "disk" in enabled
    if key.startswith("usb"):
        return "usb" in enabled
    if key in ("cores", "vcpus", "sockets"):
        return "cpu" in enabled and key == "vcpus"
    if key == "memory":
        return "memory" in enabled
    return False


def privilege_for(key: str) -> str:
    """The VM.Config.* privilege PVE checks for changing ``key``."""
    if key.startswith("ipconfig") or key in ("ciuser", "cipassword", "citype", "cicustom", "ciupgrade",
                                              "sshkeys", "nameserver", "searchdomain"):  # fmt: skip
        return "VM.Config.Cloudinit" if not key.startswith("ipconfig") else "VM.Config.Network"
    if key in ("cores", "sockets", "vcpus", "cpu", "cpulimit", "cpuunits", "affinity", "numa"):
        return "VM.Config.CPU"
    if key in ("memory", "balloon", "shares"):
        return "VM.Config.Memory"
    if NET_RE.match(key):
        return "VM.Config.Network"
    if DISK_RE.match(key) or key.startswith("unused") or key in ("efidisk0", "tpmstate0"):
        return "VM.Config.Disk"
    if key in ("ostype", "machine", "bios", "scsihw", "vga", "tablet", "keyboard", "localtime", "acpi", "kvm",
               "hotplug", "agent", "smbios1", "arch", "args", "rng0", "audio0", "watchdog", "hostpci0"):  # fmt: skip
        return "VM.Config.HWType"
    return "VM.Config.Options"
