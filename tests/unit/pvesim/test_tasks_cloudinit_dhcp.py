"""UPIDs, cloud-init rendering and the DHCP pool."""

from __future__ import annotations

import urllib.parse

import pytest
import yaml

from k3s_deploy_lab.pvesim import cloudinit, dhcp
from k3s_deploy_lab.pvesim.apierror import ApiError
from k3s_deploy_lab.pvesim.model import VM, State
from k3s_deploy_lab.pvesim.tasks import make_upid, parse_upid

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyNbVnV5l3rcB8pZ7yo6Q8sVxj7Lz1Vd6i5e1Qy3m0k me@host"


def test_upid_format() -> None:
    upid = make_upid("pve1", 0x1A2B, 0x33, 0x66A1B2C3, "qmclone", "9000", "root@pam!tok")
    assert upid == "UPID:pve1:00001A2B:00000033:66A1B2C3:qmclone:9000:root@pam!tok:"
    assert parse_upid(upid) == {"node": "pve1", "pid": 0x1A2B, "pstart": 0x33, "starttime": 0x66A1B2C3,
                                "type": "qmclone", "id": "9000", "user": "root@pam!tok"}  # fmt: skip
    assert parse_upid("UPID:pve1:zz") is None and parse_upid(upid[:-1]) is None


def test_sshkeys_decode_and_validate() -> None:
    stored = urllib.parse.quote(f"{KEY}\n\n{KEY}", safe="")
    assert cloudinit.decode_sshkeys(stored) == [KEY, KEY]
    cloudinit.validate_sshkeys(stored)
    with pytest.raises(ApiError) as err:
        cloudinit.validate_sshkeys(urllib.parse.quote("ssh-ed25519 not*base64", safe=""))
    assert (err.value.status, err.value.message) == (500, "SSH public key validation error")


def _vm(**config: str) -> VM:
    return VM(
        vmid=200,
        node="pve1",
        config={
            "name": "k3s-1",
            "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
            "ide2": "local-lvm:vm-200-cloudinit,media=cdrom",
            **config,
        },
    )


def test_user_and_network_data() -> None:
    vm = _vm(ciuser="k3s", sshkeys=urllib.parse.quote(KEY, safe=""), searchdomain="lab.test", nameserver="127.0.0.53",
             ipconfig0="ip=127.5.0.9/24,gw=127.5.0.1")  # fmt: skip
    user = cloudinit.user_data(vm)
    assert user.startswith("#cloud-config\n")
    parsed = yaml.safe_load(user)
    assert parsed["hostname"] == "k3s-1" and parsed["fqdn"] == "k3s-1.lab.test" and parsed["user"] == "k3s"
    assert parsed["ssh_authorized_keys"] == [KEY]
    net = yaml.safe_load(cloudinit.network_data(vm))
    eth0 = net["config"][0]
    assert net["version"] == 1 and eth0["mac_address"] == "bc:24:11:00:00:01"
    assert eth0["subnets"] == [{"type": "static", "address": "127.5.0.9", "netmask": "255.255.255.0",
                                "gateway": "127.5.0.1"}]  # fmt: skip
    assert net["config"][1] == {"type": "nameserver", "address": ["127.0.0.53"], "search": ["lab.test"]}
    assert yaml.safe_load(cloudinit.network_data(_vm()))["config"][0]["subnets"] == [{"type": "dhcp4"}]
    assert cloudinit.meta_data(vm).startswith("instance-id: ")


def test_ip_modes() -> None:
    assert cloudinit.ip_mode(cloudinit.boot_snapshot(_vm())) == ("dhcp", None)
    assert cloudinit.ip_mode(cloudinit.boot_snapshot(_vm(ipconfig0="ip=127.5.0.9/24"))) == (
        "static",
        "127.5.0.9/24",
    )
    assert cloudinit.ip_mode(cloudinit.boot_snapshot(_vm(ipconfig0="ip=manual"))) == ("none", None)
    no_drive = _vm(ipconfig0="ip=127.5.0.9/24", ciuser="k3s")
    del no_drive.config["ide2"]
    assert cloudinit.boot_snapshot(no_drive) == {"_mac0": "BC:24:11:00:00:01"}
    assert cloudinit.ip_mode(cloudinit.boot_snapshot(no_drive)) == ("dhcp", None)
    no_nic = VM(vmid=1, node="pve1", config={})
    assert cloudinit.ip_mode(cloudinit.boot_snapshot(no_nic)) == ("none", None)


def test_dhcp_leases_are_stable_and_skip_the_gateway() -> None:
    state = State(dhcp_range="127.9.0.0/29")
    first = dhcp.lease(state, "bc:24:11:00:00:01")
    assert first == "127.9.0.2"
    assert dhcp.lease(state, "BC:24:11:00:00:01") == first
    assert [dhcp.lease(state, f"BC:24:11:00:00:0{i}") for i in range(2, 6)] == [
        f"127.9.0.{i}" for i in range(3, 7)
    ]
    with pytest.raises(RuntimeError):
        dhcp.lease(state, "BC:24:11:00:00:09")
