"""The cloud-init interface index: ProxmoxVM plans ipconfigN, a K3sCluster hands N to its children,
and the simulator configures and reports the address on netN."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from k3s_deploy.api.k3scluster import K3sClusterSpec
from k3s_deploy.api.proxmoxvm import ProxmoxVMSpec
from k3s_deploy.errors import InvalidSpec
from k3s_deploy.services.k3scluster.desired import desired
from k3s_deploy.services.k3scluster.topology import ClusterRef
from k3s_deploy.services.proxmoxvm import plan
from k3s_deploy_lab.pvesim import cloudinit
from k3s_deploy_lab.pvesim.endpoints.agent import interfaces
from k3s_deploy_lab.pvesim.inventory import merged_timing
from k3s_deploy_lab.pvesim.model import VM, State
from k3s_deploy_lab.pvesim.sim import Sim

NET0 = "virtio=BC:24:11:00:00:01,bridge=vmbr0"
NET1 = "virtio=BC:24:11:00:00:02,bridge=vmbr1"


def vm_spec(**cloud_init: Any) -> ProxmoxVMSpec:
    return ProxmoxVMSpec.model_validate(
        {
            "credentialsRef": {"name": "pve"},
            "source": {"clone": {"template": {"name": "tpl"}}},
            "cloudInit": cloud_init,
        }
    )


def test_interface_defaults_to_zero_and_is_bounded_like_pve() -> None:
    assert vm_spec(ipConfig={"dhcp": True}).cloud_init.interface == 0  # type: ignore[union-attr]
    assert vm_spec(interface=31).cloud_init.interface == 31  # type: ignore[union-attr]
    for bad in (-1, 32):
        with pytest.raises(ValidationError):
            vm_spec(interface=bad)


def test_plan_writes_ipconfig_of_the_chosen_interface() -> None:
    s = vm_spec(interface=1, ipConfig={"address": "10.1.0.5/24", "gateway": "10.1.0.1"})
    config = {"net0": NET0, "net1": NET1, "ipconfig0": "ip=dhcp"}
    todo = plan.plan_config(s, config, name=None, owner_tag=None)
    assert todo.changes == {"ipconfig1": "ip=10.1.0.5/24,gw=10.1.0.1"}
    assert todo.cloud_init_changed
    assert not plan.plan_config(s, {**config, **todo.changes}, name=None, owner_tag=None)
    assert plan.is_cloud_init_key("ipconfig17") and not plan.is_cloud_init_key("ipconfig")


def test_plan_refuses_an_interface_the_vm_lacks() -> None:
    s = vm_spec(interface=2, ipConfig={"dhcp": True})
    with pytest.raises(InvalidSpec) as err:
        plan.plan_config(s, {"net0": NET0, "net1": NET1}, name=None, owner_tag=None)
    assert err.value.reason == "InterfaceNotFound" and "net2" in str(err.value)


def _cluster(network: dict[str, Any], **over: Any) -> K3sClusterSpec:
    template = {"clone": {"template": {"name": "tpl"}}, "cloudInit": {"user": "k3s"}}
    body: dict[str, Any] = {
        "credentialsRef": {"name": "pve"},
        "k3s": {"version": "v1.31.4+k3s1"},
        "ssh": {"privateKeySecretRef": {"name": "ssh", "key": "k"}},
        "servers": {"replicas": 1, "template": template},
        "network": network,
        **over,
    }
    return K3sClusterSpec.model_validate(body)


REF = ClusterRef("demo", "ns1", "uid-1")


def test_cluster_network_interface_reaches_every_child() -> None:
    spec = _cluster({"ipPool": {"cidr": "10.1.0.0/24"}, "gateway": "10.1.0.1", "interface": 1})
    child = desired(REF, spec, allocations={}).manifests["demo-server-0"]
    ci = child["spec"]["cloudInit"]
    assert ci["interface"] == 1 and ci["ipConfig"]["gateway"] == "10.1.0.1"
    assert ProxmoxVMSpec.model_validate(child["spec"]).cloud_init.interface == 1  # type: ignore[union-attr]
    dhcp = desired(REF, _cluster({"interface": 3}), allocations={}).manifests["demo-server-0"]
    assert dhcp["spec"]["cloudInit"]["interface"] == 3 and dhcp["spec"]["cloudInit"]["ipConfig"] == {
        "dhcp": True
    }
    default = desired(REF, _cluster({}), allocations={}).manifests["demo-server-0"]
    assert default["spec"]["cloudInit"]["interface"] == 0


def test_discovered_child_spells_out_the_default_interface() -> None:
    """An adopted child with cloud-init keys carries interface explicitly (the CRD default would
    otherwise make it differ from what the cluster wants on every pass)."""
    spec = _cluster(
        {}, servers=None, discovery={"locations": {"servers": ["pve1/101"]}, "cloudInit": {"user": "k3s"}}
    )
    child = desired(REF, spec, allocations={}).manifests["demo-server-101"]
    assert child["spec"]["cloudInit"] == {"interface": 0, "user": "k3s", "sshAuthorizedKeys": []}


def _vm(**config: str) -> VM:
    base = {"name": "k3s-1", "agent": "1", "net0": NET0, "ide2": "local-lvm:vm-200-cloudinit,media=cdrom"}
    return VM(vmid=200, node="pve1", config={**base, **config})


def test_sim_ip_mode_pairs_ipconfig_n_with_net_n() -> None:
    snap = cloudinit.boot_snapshot(_vm(net1=NET1, ipconfig1="ip=127.6.0.9/24"))
    assert snap["_mac1"] == "BC:24:11:00:00:02"
    assert cloudinit.ip_mode(snap, 0) == ("dhcp", None)
    assert cloudinit.ip_mode(snap, 1) == ("static", "127.6.0.9/24")
    # ipconfig1 without a net1 configures nothing; a second NIC without ipconfig1 takes no DHCP lease
    assert cloudinit.ip_mode(cloudinit.boot_snapshot(_vm(ipconfig1="ip=127.6.0.9/24")), 1) == ("none", None)
    assert cloudinit.ip_mode(cloudinit.boot_snapshot(_vm(net1=NET1)), 1) == ("none", None)
    net = yaml.safe_load(cloudinit.network_data(_vm(net1=NET1, ipconfig1="ip=127.6.0.9/24")))["config"]
    assert net[1]["name"] == "eth1" and net[1]["subnets"][0]["address"] == "127.6.0.9"


class _Call:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim


def test_sim_guest_agent_reports_each_nic_address() -> None:
    async def run() -> tuple[list[dict[str, Any]], list[str]]:
        sim = Sim(State(dhcp_range="127.9.0.0/24", timing=merged_timing(None)))
        vm = _vm(net1=NET1, ipconfig0="ip=127.5.0.9/16", ipconfig1="ip=127.6.0.9/24,gw=127.6.0.1")
        sim.state.vms[vm.vmid] = vm
        sim.boot(vm)
        return interfaces(_Call(sim), vm), sim.addresses(vm)  # type: ignore[arg-type]

    ifaces, addresses = asyncio.run(run())
    by_name = {i["name"]: i for i in ifaces}
    assert set(by_name) == {"lo", "eth0", "eth1"}
    v4 = {n: [(a["ip-address"], a["prefix"]) for a in i["ip-addresses"] if a["ip-address-type"] == "ipv4"]
          for n, i in by_name.items()}  # fmt: skip
    assert v4["eth0"] == [("127.5.0.9", 16)] and v4["eth1"] == [("127.6.0.9", 24)]
    assert by_name["eth1"]["hardware-address"] == "bc:24:11:00:00:02"
    assert addresses == ["127.5.0.9", "127.6.0.9"]
