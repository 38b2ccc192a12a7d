"""The address rules (k3s_deploy/netpolicy.py): what a tenant's URL may reach, in every spelling."""

from __future__ import annotations

import ipaddress

import pytest

from k3s_deploy.errors import AddressRefused
from k3s_deploy.netpolicy import AddressPolicy, AllowList, classify

DOWNLOAD = AddressPolicy("download", AllowList.parse(["*", "10.20.0.0/16", "127.0.0.1"]), fix="list it")
PROXMOX = AddressPolicy("Proxmox API", allow_private=True)


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "Loopback"),
        ("127.255.0.9", "Loopback"),
        ("::1", "Loopback"),
        ("::ffff:127.0.0.1", "Loopback"),  # IPv4-mapped
        ("::ffff:7f00:2", "Loopback"),
        ("64:ff9b::7f00:1", "Loopback"),  # NAT64 of 127.0.0.1
        ("::127.0.0.1", "Loopback"),  # IPv4-compatible
        ("2002:7f00:1::1", "Loopback"),  # 6to4 around 127.0.0.1
        ("10.1.2.3", "Private"),
        ("172.16.0.1", "Private"),
        ("192.168.1.1", "Private"),
        ("100.64.0.1", "Private"),  # shared address space (CGNAT)
        ("fd12:3456::1", "Private"),
        ("::ffff:10.0.0.1", "Private"),
        ("192.0.2.10", "Private"),  # documentation
        ("240.0.0.1", "Private"),  # reserved
        ("169.254.169.254", "Metadata"),
        ("169.254.170.2", "Metadata"),
        ("fd00:ec2::254", "Metadata"),
        ("100.100.100.200", "Metadata"),
        ("::ffff:169.254.169.254", "Metadata"),
        ("169.254.1.1", "LinkLocal"),
        ("fe80::1", "LinkLocal"),
        ("0.0.0.0", "Unspecified"),
        ("0.1.2.3", "Unspecified"),
        ("::", "Unspecified"),
        ("224.0.0.1", "Multicast"),
        ("ff02::1", "Multicast"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),  # NAT64 of a public address: IPv6-only clusters need it
    ],
)
def test_classify(address: str, rule: str | None) -> None:
    assert classify(ipaddress.ip_address(address)) == rule


def test_allow_list_exempts_listed_networks_only() -> None:
    DOWNLOAD.check("mirror", ipaddress.ip_address("10.20.3.4"))
    DOWNLOAD.check("mirror", ipaddress.ip_address("127.0.0.1"))
    DOWNLOAD.check("mirror", ipaddress.ip_address("::ffff:127.0.0.1"))  # the same address, mapped
    DOWNLOAD.check("mirror", ipaddress.ip_address("1.1.1.1"))
    with pytest.raises(AddressRefused) as refused:
        DOWNLOAD.check("mirror", ipaddress.ip_address("127.0.0.2"))
    assert refused.value.reason == "LoopbackAddressRefused"
    assert "mirror (127.0.0.2)" in refused.value.message and "list it" in refused.value.message
    with pytest.raises(AddressRefused) as private:
        DOWNLOAD.check("mirror", ipaddress.ip_address("10.21.0.1"))
    assert private.value.reason == "PrivateAddressRefused"


def test_metadata_and_link_local_are_refused_even_when_listed() -> None:
    listed = AddressPolicy("download", AllowList.parse(["169.254.0.0/16", "0.0.0.0/0", "::/0"]))
    for address in ("169.254.169.254", "169.254.7.7", "fe80::1", "0.0.0.0", "224.0.0.1"):
        with pytest.raises(AddressRefused):
            listed.check("x", ipaddress.ip_address(address))
    for name in ("metadata.google.internal", "METADATA.google.internal.", "metadata", "instance-data"):
        with pytest.raises(AddressRefused) as refused:
            listed.check_name(name)
        assert refused.value.reason == "MetadataAddressRefused"


def test_proxmox_keeps_private_and_loopback_but_not_metadata() -> None:
    for address in ("10.0.0.5", "192.168.1.10", "127.0.0.1", "fd00::5", "8.8.8.8"):
        PROXMOX.check("pve", ipaddress.ip_address(address))
    for address, reason in (
        ("169.254.169.254", "MetadataAddressRefused"),
        ("169.254.10.10", "LinkLocalAddressRefused"),
        ("fe80::1", "LinkLocalAddressRefused"),
        ("fd00:ec2::254", "MetadataAddressRefused"),
        ("0.0.0.0", "UnspecifiedAddressRefused"),
    ):
        with pytest.raises(AddressRefused) as refused:
            PROXMOX.check("pve", ipaddress.ip_address(address))
        assert refused.value.reason == reason


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.0.0.1", "017700000001"]
)
def test_legacy_numeric_forms_are_judged_as_the_address_they_mean(host: str) -> None:
    """inet_aton reads these as 127.0.0.1 (the literal is checked before anything connects)."""
    strict = AddressPolicy("download", AllowList.parse(["*"]))
    with pytest.raises(AddressRefused) as refused:
        strict.check_literal(host)
    assert refused.value.reason == "LoopbackAddressRefused"
    with pytest.raises(AddressRefused) as refused:
        strict.resolve(host, 443)
    assert refused.value.reason == "LoopbackAddressRefused"


def test_resolve_checks_every_address_of_a_name() -> None:
    strict = AddressPolicy("download", AllowList.parse(["*"]))
    with pytest.raises(AddressRefused) as refused:
        strict.resolve("localhost", 443)
    assert refused.value.reason == "LoopbackAddressRefused"
    assert strict.checked("mirror", ["1.1.1.1", "2606:4700::1111", "1.1.1.1"]) == [
        "1.1.1.1",
        "2606:4700::1111",
    ]
    with pytest.raises(AddressRefused):
        strict.checked("mirror", ["1.1.1.1", "10.0.0.1"])  # one bad answer refuses the name


def test_allow_list_parsing_and_host_admission() -> None:
    allowed = AllowList.parse([" Mirror.Example.com ", "*.githubusercontent.com", "10.0.0.0/8", "::1", ""])
    assert allowed.enabled
    assert allowed.admits("mirror.example.com") and allowed.admits("MIRROR.example.com.")
    assert allowed.admits("objects.githubusercontent.com")
    assert not allowed.admits("githubusercontent.com.evil.org") and not allowed.admits("example.com")
    assert allowed.admits("10.9.8.7") and allowed.admits("::1") and not allowed.admits("11.0.0.1")
    assert not AllowList.parse([]).enabled and not AllowList.parse([""]).admits("x")
    assert AllowList.parse(["*"]).admits("anything.example")
    for bad in ("http://mirror", "10.0.0.0/33", "a b", "mirror/path"):
        with pytest.raises(ValueError):
            AllowList.parse([bad])


def test_the_setting_reads_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from k3s_deploy.settings import OperatorSettings

    monkeypatch.setenv("K3SD_FETCH_ALLOWED_HOSTS", "mirror.example.internal, 10.20.30.0/24,")
    settings = OperatorSettings()
    assert settings.fetch_allowed_hosts == ["mirror.example.internal", "10.20.30.0/24"]
    assert settings.fetch_allow_list.admits("mirror.example.internal")
    monkeypatch.setenv("K3SD_FETCH_ALLOWED_HOSTS", "")
    assert not OperatorSettings().fetch_allow_list.enabled  # the default: downloads off
    with pytest.raises(ValidationError, match="not a host name"):
        OperatorSettings(fetch_allowed_hosts="https://mirror/")
