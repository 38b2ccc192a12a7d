"""cloudInit.interface against the simulator: ipConfig lands in ipconfigN and the guest agent reports
the address on netN, which the operator then reports; a VM without that netN stalls.

Real apiserver, operator process and Proxmox VE simulator (as in test_proxmoxvm_sim.py).
"""

from __future__ import annotations

import pytest

from integration.test_proxmoxvm_sim import Env, clone_spec, env  # noqa: F401  # env is a fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _template_on(env: Env, node: str, name: str) -> int:  # noqa: F811
    for item in env.sim.api().cluster.resources.get(type="vm"):
        if item["node"] == node and item.get("name") == name:
            return int(item["vmid"])
    raise AssertionError(f"no {name} on {node}")


def test_second_nic_gets_the_address_and_is_reported(env: Env) -> None:  # noqa: F811
    template = _template_on(env, "pve2", "ubuntu-2404-cloud")
    env.sim.api().nodes("pve2").qemu(template).config.put(net1="virtio,bridge=vmbr1")
    cloud_init = {
        "user": "k3s",
        "interface": 1,
        "ipConfig": {"address": "127.6.0.20/24", "gateway": "127.6.0.1"},
    }
    env.apply("two-nics", clone_spec(cloudInit=cloud_init, guestAgent={"addressCIDR": "127.6.0.0/24"}))
    obj = env.wait_condition("two-nics", "Ready")
    assert obj["status"]["addresses"] == ["127.6.0.20"]
    config = env.config(obj["status"]["vmid"])
    assert config["ipconfig1"] == "ip=127.6.0.20/24,gw=127.6.0.1"
    assert config["ipconfig0"] == "ip=dhcp"  # the template's first NIC is left as it was
    guest = next(g for g in env.sim.guests()["guests"] if g["vmid"] == obj["status"]["vmid"])
    assert "127.6.0.20" in guest["addresses"] and len(guest["addresses"]) == 2  # eth0 (DHCP) and eth1


def test_interface_the_vm_lacks_stalls_with_a_reason(env: Env) -> None:  # noqa: F811
    cloud_init = {"user": "k3s", "interface": 3, "ipConfig": {"dhcp": True}}
    env.apply("no-nic3", clone_spec(cloudInit=cloud_init))
    obj = env.wait_condition("no-nic3", "Stalled", reason="InterfaceNotFound")
    message = env.condition("no-nic3", "Stalled", obj)["message"]
    assert "net3" in message and "cloudInit.interface 3" in message
