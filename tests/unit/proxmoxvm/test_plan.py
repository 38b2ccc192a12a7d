"""Pure planning rules: selection, placement, config diff, addresses."""

from __future__ import annotations

import pytest

from k3s_deploy.api.proxmoxvm import ProxmoxVMSpec, VMSelector
from k3s_deploy.errors import InvalidSpec, ProxmoxNotFound
from k3s_deploy.ports.proxmox import GuestInterface, NodeSummary, VmSummary
from k3s_deploy.services.proxmoxvm import plan

GIB = 1024**3


def spec(**extra: object) -> ProxmoxVMSpec:
    data: dict[str, object] = {
        "credentialsRef": {"name": "pve"},
        "source": {"clone": {"template": {"name": "tpl"}}},
    }
    data.update(extra)
    return ProxmoxVMSpec.model_validate(data)


def test_template_copy_on_target_node_is_preferred() -> None:
    templates = [VmSummary(9000, "pve1", "tpl", template=True), VmSummary(9001, "pve2", "tpl", template=True)]
    nodes = [
        NodeSummary("pve1", "online", 8 * GIB, 16 * GIB),
        NodeSummary("pve2", "online", 2 * GIB, 16 * GIB),
    ]
    tpl, choice = plan.choose_placement(templates, nodes, spec(allowedNodes=["pve1", "pve2"]))
    target = choice.node
    assert (tpl.vmid, target) == (9001, "pve2")  # most free memory, local copy
    tpl, choice = plan.choose_placement(templates[:1], nodes, spec(allowedNodes=["pve2"]))
    target = choice.node
    assert (tpl.vmid, target) == (9000, "pve2")  # clone with target
    with pytest.raises(ProxmoxNotFound):
        plan.choose_placement(templates, [NodeSummary("pve1", "offline")], spec(node="pve1"))


def test_template_selection() -> None:
    vms = [VmSummary(9000, "pve1", "tpl", template=True), VmSummary(100, "pve1", "tpl2")]
    assert [t.vmid for t in plan.select_template(vms, VMSelector(name="tpl"))] == [9000]
    with pytest.raises(ProxmoxNotFound) as missing:
        plan.select_template(vms, VMSelector(name="nope"))
    assert missing.value.reason == "TemplateNotFound"


def test_plan_is_empty_when_config_matches() -> None:
    s = spec(
        resources={"cores": 2, "memoryMiB": 2048, "diskGiB": 8},
        cloudInit={
            "ipConfig": {"address": "10.0.0.5/24", "gateway": "10.0.0.1"},
            "nameservers": ["10.0.0.2"],
        },
        tags=["k3s"],
    )
    config = {
        "cores": 2,
        "memory": "2048",
        "scsi0": "local:vm-1-disk-0,size=8G",
        "name": "x",
        "tags": "k3s;k3sdeploy-aa",
        "ipconfig0": "gw=10.0.0.1,ip=10.0.0.5/24",
        "nameserver": "10.0.0.2",
    }
    assert not plan.plan_config(s, config, name="x", owner_tag="k3sdeploy-aa")
    changed = plan.plan_config(s, {**config, "cores": 1, "tags": "other"}, name="x", owner_tag="k3sdeploy-aa")
    assert changed.changes == {"cores": 2, "tags": "k3s;k3sdeploy-aa;other"}
    assert not changed.cloud_init_changed


def test_disk_grow_and_shrink() -> None:
    config = {"scsi0": "local:vm-1-disk-0,size=10240M"}
    assert plan.plan_config(spec(resources={"diskGiB": 20}), config, name=None, owner_tag=None).resize == (
        "scsi0",
        "20G",
    )
    with pytest.raises(InvalidSpec) as shrink:
        plan.plan_config(spec(resources={"diskGiB": 5}), config, name=None, owner_tag=None)
    assert shrink.value.reason == "DiskShrinkRefused"
    with pytest.raises(ProxmoxNotFound):
        plan.plan_config(spec(resources={"diskGiB": 5, "disk": "virtio0"}), config, name=None, owner_tag=None)


def test_usable_addresses_skip_only_loopback_interface_and_hosts() -> None:
    interfaces = [
        GuestInterface("lo", "00:00:00:00:00:00", ("127.0.0.1", "::1")),
        GuestInterface("eth0", "bc:24:11:aa:bb:cc", ("127.0.3.7", "127.0.0.1", "fe80::5", "169.254.1.1")),
        GuestInterface("eth1", "bc:24:11:aa:bb:cd", ("10.1.2.3", "fd00::3")),
    ]
    assert plan.usable_addresses(interfaces) == ["127.0.3.7", "10.1.2.3", "fd00::3"]
    assert plan.usable_addresses(interfaces, "10.0.0.0/8") == ["10.1.2.3"]
