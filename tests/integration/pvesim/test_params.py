"""Parameter verification and error shapes (the pitfalls a real PVE punishes)."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from proxmoxer import ResourceException

from fixtures.pve import PveSim
from integration.pvesim.helpers import raw

pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyNbVnV5l3rcB8pZ7yo6Q8sVxj7Lz1Vd6i5e1Qy3m0k user@host"
# base64 with '+' and '/', as real keys have: plain quote() leaves '/', quote_plus() emits '+'
KEY2 = (
    "ssh-rsa " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"\xfb\xff\xbf" * 10).decode() + " second@host"
)


def test_python_true_is_refused_one_and_zero_accepted(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(9001).clone.post(newid=300, full=True)
    assert err.value.status_code == 400
    assert err.value.content == "Parameter verification failed."
    assert err.value.errors == {"full": "type check ('boolean') failed - got 'True'\n"}
    upid = api.nodes("pve1").qemu(9001).clone.post(newid=300, full=1)
    assert pve_sim.wait_task(upid)["exitstatus"] == "OK"


def test_unknown_missing_and_out_of_range_parameters(pve_sim: PveSim) -> None:
    resp = raw(pve_sim, "POST", "/nodes/pve1/qemu/9001/clone", data={"newid": 99, "colour": "blue"})
    assert resp.status_code == 400 and resp.reason == "Parameter verification failed."
    body = resp.json()
    assert body["data"] is None and body["message"].startswith("Parameter verification failed.")
    assert body["errors"] == {
        "newid": "value must have a minimum value of 100\n",
        "colour": "property is not defined in schema and the schema does not allow additional properties\n",
    }
    missing = raw(pve_sim, "POST", "/nodes/pve1/qemu/9001/clone", data={})
    assert missing.json()["errors"] == {"newid": "property is missing and it is not optional\n"}
    wrong_type = raw(pve_sim, "GET", "/cluster/nextid", params={"vmid": "abc"})
    assert wrong_type.json()["errors"] == {"vmid": "type check ('integer') failed - got 'abc'\n"}
    bad_enum = raw(pve_sim, "GET", "/cluster/resources", params={"type": "vms"})
    assert bad_enum.status_code == 400 and "enumeration" in bad_enum.json()["errors"]["type"]


def test_json_bodies_accept_json_booleans(pve_sim: PveSim) -> None:
    resp = raw(
        pve_sim, "POST", "/nodes/pve1/qemu/9001/clone", json={"newid": 301, "full": True, "name": "j1"}
    )
    assert resp.status_code == 200 and resp.json()["data"].startswith("UPID:pve1:")


def test_sshkeys_must_be_fully_percent_encoded(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    vm = api.nodes("pve1").qemu(110)
    keys = f"{KEY}\n{KEY2}"
    for wrong in (urllib.parse.quote(keys), urllib.parse.quote_plus(keys), keys):
        with pytest.raises(ResourceException) as err:
            vm.config.put(sshkeys=wrong)
        assert err.value.status_code == 400
        assert err.value.errors["sshkeys"].startswith("invalid format - invalid urlencoded string: ")
    encoded = urllib.parse.quote(keys, safe="")
    vm.config.put(sshkeys=encoded)
    assert vm.config.get()["sshkeys"] == encoded  # stored and returned still encoded
    user_data = vm.cloudinit.dump.get(type="user")
    assert f"  - {KEY}" in user_data and f"  - {KEY2}" in user_data


def test_an_invalid_key_is_a_500(pve_sim: PveSim) -> None:
    with pytest.raises(ResourceException) as err:
        pve_sim.api().nodes("pve1").qemu(110).config.put(sshkeys=urllib.parse.quote("not a key", safe=""))
    assert (err.value.status_code, err.value.content) == (500, "SSH public key validation error")


def test_tags_are_normalised_and_checked(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    vm = api.nodes("pve1").qemu(110)
    vm.config.put(tags="Prod;k3s-server, prod zeta")
    assert vm.config.get()["tags"] == "k3s-server;prod;zeta"
    entry = next(r for r in api.cluster.resources.get(type="vm") if r["vmid"] == 110)
    assert entry["tags"] == "k3s-server;prod;zeta"
    with pytest.raises(ResourceException) as err:
        vm.config.put(tags="bad/tag")
    assert err.value.errors == {"tags": "invalid format - invalid characters in tag\n"}


def test_ipconfig_format(pve_sim: PveSim) -> None:
    vm = pve_sim.api().nodes("pve1").qemu(110)
    vm.config.put(ipconfig0="ip=127.3.0.5/24,gw=127.3.0.1", nameserver="127.0.0.53", searchdomain="lab.test")
    assert vm.config.get()["ipconfig0"] == "ip=127.3.0.5/24,gw=127.3.0.1"
    with pytest.raises(ResourceException) as err:
        vm.config.put(ipconfig0="gw=127.3.0.1")
    assert err.value.status_code == 400 and "ipconfig0" in err.value.errors
    with pytest.raises(ResourceException) as err:
        vm.config.put(ipconfig0="ip=300.1.1.1/24")
    assert err.value.status_code == 400


def test_unknown_paths_answer_501(pve_sim: PveSim) -> None:
    resp = raw(pve_sim, "GET", "/nodes/pve1/lxc")
    assert resp.status_code == 501 and resp.reason == "Method 'GET /nodes/pve1/lxc' not implemented"
    assert resp.json() == {"data": None, "message": "Method 'GET /nodes/pve1/lxc' not implemented\n"}
    wrong_method = raw(pve_sim, "PATCH", "/version")
    assert wrong_method.status_code == 501


def test_repeated_keys_become_arrays(pve_sim: PveSim) -> None:
    resp = raw(pve_sim, "GET", "/cluster/resources?type=vm&type=node")
    assert resp.status_code == 400
    assert resp.json()["errors"] == {"type": "type check ('string') failed - got ARRAY\n"}
