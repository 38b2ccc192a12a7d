"""Schema-driven parameter checks and PVE formats."""

from __future__ import annotations

import pytest

from k3s_deploy_lab.pvesim.apierror import ApiError
from k3s_deploy_lab.pvesim.formats import check_format, parse_ipconfig, parse_property_string
from k3s_deploy_lab.pvesim.schema import endpoint
from k3s_deploy_lab.pvesim.validation import validate

CONFIG = endpoint("/nodes/{node}/qemu/{vmid}/config", "POST")
CLONE = endpoint("/nodes/{node}/qemu/{vmid}/clone", "POST")


def errors_of(ep: object, params: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ApiError) as err:
        validate(ep, params)  # type: ignore[arg-type]
    assert err.value.status == 400 and err.value.message == "Parameter verification failed."
    assert err.value.errors is not None
    return err.value.errors


def test_booleans_only_one_or_zero() -> None:
    base = {"node": "pve1", "vmid": "9000", "newid": "101"}
    assert validate(CLONE, {**base, "full": "1"})["full"] is True
    assert validate(CLONE, {**base, "full": "0"})["full"] is False
    assert validate(CLONE, {**base, "full": True})["full"] is True  # JSON body
    for bad in ("True", "true", "yes", "2"):
        assert errors_of(CLONE, {**base, "full": bad}) == {
            "full": f"type check ('boolean') failed - got '{bad}'\n"
        }


def test_integers_bounds_and_required() -> None:
    assert validate(CLONE, {"node": "pve1", "vmid": "9000", "newid": "101"})["newid"] == 101
    assert errors_of(CLONE, {"node": "pve1", "vmid": "9000", "newid": "1x"}) == {
        "newid": "type check ('integer') failed - got '1x'\n"
    }
    assert errors_of(CLONE, {"node": "pve1", "vmid": "9000", "newid": "1000000000"}) == {
        "newid": "value must have a maximum value of 999999999\n"
    }
    assert errors_of(CLONE, {"node": "pve1", "vmid": "9000"}) == {
        "newid": "property is missing and it is not optional\n"
    }


def test_indexed_families_and_unknown_keys() -> None:
    ok = validate(
        CONFIG, {"node": "pve1", "vmid": "100", "net3": "virtio,bridge=vmbr0", "ipconfig31": "ip=dhcp"}
    )
    assert ok["net3"] == "virtio,bridge=vmbr0"
    errs = errors_of(CONFIG, {"node": "pve1", "vmid": "100", "ipconfig32": "ip=dhcp", "net0x": "virtio"})
    assert set(errs) == {"ipconfig32", "net0x"}


def test_named_formats() -> None:
    assert check_format("pve-node", "pve1") is None
    assert check_format("pve-node", "pve_1") == "value does not look like a valid node name"
    assert check_format("pve-tag-list", "a;b,c d") is None
    assert check_format("pve-tag-list", "a/b") == "invalid characters in tag"
    assert check_format("urlencoded", "ssh-ed25519%20AAAA%2B%2F") is None
    assert check_format("urlencoded", "ssh-ed25519 AAAA") is not None
    assert check_format("urlencoded", "a+b") is not None
    assert check_format("address-list", "127.0.0.53 1.1.1.1") is None
    assert check_format("address-list", "dns.example") is not None
    assert check_format("dns-name", "k3s-server-1") is None
    assert check_format("dns-name", "bad_name") is not None


def test_ipconfig() -> None:
    assert parse_ipconfig("ip=127.1.2.3/16,gw=127.1.0.1") == {"ip": "127.1.2.3/16", "gw": "127.1.0.1"}
    assert parse_ipconfig("ip=dhcp,ip6=auto") == {"ip": "dhcp", "ip6": "auto"}
    for bad in ("gw=127.0.0.1", "ip=127.0.0.1", "ip=1.2.3.4/24,gw=nope", "foo=bar", "ip=fe80::1/64"):
        with pytest.raises(ValueError):
            parse_ipconfig(bad)


def test_property_strings() -> None:
    net = CONFIG.prop("net0")
    assert net is not None
    parsed = parse_property_string("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", net["format"])
    assert parsed["model"] == "virtio" and parsed["macaddr"] == "BC:24:11:00:00:01"
    with pytest.raises(ValueError):
        parse_property_string("virtio,colour=blue", net["format"])
    memory = CONFIG.prop("memory")
    assert memory is not None
    assert parse_property_string("2048", memory["format"]) == {"current": "2048"}
    assert check_format(memory["format"], "8") is not None  # minimum 16
    agent = CONFIG.prop("agent")
    assert agent is not None and check_format(agent["format"], "enabled=1,fstrim_cloned_disks=1") is None
