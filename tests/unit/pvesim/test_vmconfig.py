"""Tags, MACs, sizes, hot-plug and privilege rules of qemu config keys."""

from __future__ import annotations

from k3s_deploy_lab.pvesim.vmconfig import (
    ensure_mac,
    format_size,
    hotpluggable,
    net_mac,
    normalize_tags,
    parse_size,
    privilege_for,
    set_disk_size,
    storages_used,
    with_new_mac,
)


def test_tags_normalised_like_pve() -> None:
    assert normalize_tags("Prod;k3s-server, prod  zeta") == "k3s-server;prod;zeta"
    assert normalize_tags("") == ""


def test_macs() -> None:
    assert net_mac("virtio=bc:24:11:aa:bb:cc,bridge=vmbr0") == "BC:24:11:AA:BB:CC"
    assert net_mac("virtio,bridge=vmbr0") is None
    fresh = ensure_mac("virtio,bridge=vmbr0")
    assert fresh.startswith("virtio=BC:24:11:") and fresh.endswith(",bridge=vmbr0")
    assert ensure_mac("e1000=BC:24:11:00:00:01,bridge=vmbr1") == "e1000=BC:24:11:00:00:01,bridge=vmbr1"
    assert with_new_mac("e1000=BC:24:11:00:00:01,bridge=vmbr1") != "e1000=BC:24:11:00:00:01,bridge=vmbr1"
    assert with_new_mac("e1000=BC:24:11:00:00:01,bridge=vmbr1").startswith("e1000=BC:24:11:")


def test_sizes() -> None:
    assert parse_size("3584M") == 3584 * 1024**2 and parse_size("1.5G") == int(1.5 * 1024**3)
    assert format_size(32 * 1024**3) == "32G" and format_size(3584 * 1024**2) == "3584M"
    assert set_disk_size("local-lvm:vm-1-disk-0,iothread=1,size=32G", 34 * 1024**3) == (
        "local-lvm:vm-1-disk-0,iothread=1,size=34G"
    )


def test_storages_used_ignores_plain_cdroms() -> None:
    conf = {"scsi0": "shared:vm-1-disk-0,size=1G", "ide2": "local-lvm:vm-1-cloudinit,media=cdrom",
            "ide0": "none,media=cdrom"}  # fmt: skip
    assert storages_used(conf) == {"shared", "local-lvm"}


def test_hotplug_defaults() -> None:
    assert hotpluggable("net1", {}) and hotpluggable("scsi1", {}) and hotpluggable("tags", {})
    assert hotpluggable("ipconfig0", {}) and hotpluggable("sshkeys", {})
    assert not hotpluggable("cores", {}) and not hotpluggable("memory", {})
    assert hotpluggable("memory", {"hotplug": "network,disk,memory"})
    assert not hotpluggable("net0", {"hotplug": "disk"})


def test_privileges_per_key() -> None:
    assert privilege_for("sshkeys") == "VM.Config.Cloudinit"
    assert privilege_for("ipconfig0") == "VM.Config.Network"
    assert privilege_for("cores") == "VM.Config.CPU"
    assert privilege_for("memory") == "VM.Config.Memory"
    assert privilege_for("scsi0") == "VM.Config.Disk"
    assert privilege_for("tags") == "VM.Config.Options"
