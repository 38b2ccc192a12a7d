"""Cloud-init as PVE renders it: sshkeys encoding rules, the data a guest boots with, and the dumps."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import urllib.parse
from typing import Any

import yaml

from k3s_deploy_lab.pvesim.apierror import ApiError
from k3s_deploy_lab.pvesim.formats import parse_ipconfig, split_list
from k3s_deploy_lab.pvesim.model import VM
from k3s_deploy_lab.pvesim.vmconfig import DISK_RE, net_mac

KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")  # fmt: skip
CI_KEYS = ("ciuser", "cipassword", "citype", "cicustom", "ciupgrade", "sshkeys", "nameserver", "searchdomain")


def decode_sshkeys(stored: str | None) -> list[str]:
    """The public key lines of a stored (still URL-encoded) `sshkeys` value."""
    if not stored:
        return []
    return [line.strip() for line in urllib.parse.unquote(stored).splitlines() if line.strip()]


def validate_sshkeys(stored: str) -> None:
    """PVE decodes the value and checks each key: a bad one is a 500, not a 400."""
    for line in decode_sshkeys(stored):
        fields = line.split()
        # options before the key type are allowed in authorized_keys lines
        idx = next((i for i, f in enumerate(fields) if f in KEY_TYPES), None)
        if idx is None or idx + 1 >= len(fields):
            raise ApiError(500, "SSH public key validation error")
        try:
            base64.b64decode(fields[idx + 1], validate=True)
        except ValueError:
            raise ApiError(500, "SSH public key validation error") from None


def hash_password(password: str) -> str:
    """Stand-in for crypt(3) SHA-256: PVE stores only a hash of `cipassword`."""
    digest = hashlib.sha256(password.encode()).hexdigest()[:43]
    return f"$5${digest[:16]}${digest[16:]}"


def has_drive(vm: VM) -> bool:
    return any("cloudinit" in v.split(",")[0] for k, v in vm.config.items() if DISK_RE.match(k))


def boot_snapshot(vm: VM) -> dict[str, str]:
    """What the guest boots with: the cloud-init drive's data (rebuilt at each start).

    ``_macN`` records the MAC of each netN. Without a cloud-init drive nothing is applied: the image
    falls back to DHCP on its first NIC and its defaults.
    """
    macs = {f"_mac{idx}": net_mac(vm.config.get(f"net{idx}", "")) or "" for idx in nic_indexes(vm.config)}
    macs.setdefault("_mac0", "")
    if not has_drive(vm):
        return macs
    return {
        k: v for k, v in vm.config.items() if k in CI_KEYS or k.startswith("ipconfig") or k == "name"
    } | macs


def nic_indexes(config: dict[str, str]) -> list[int]:
    """The N of every netN device, in order."""
    return [idx for idx in range(32) if f"net{idx}" in config]


def ip_mode(snapshot: dict[str, str], idx: int = 0) -> tuple[str, str | None]:
    """('dhcp'|'static'|'none', cidr) for netN as cloud-init configures it (ipconfigN pairs with netN).

    Without ipconfigN only the first NIC takes DHCP (as PVE's generated network config does).
    """
    if not snapshot.get(f"_mac{idx}"):
        return "none", None
    raw = snapshot.get(f"ipconfig{idx}")
    if raw is None:
        return ("dhcp", None) if idx == 0 else ("none", None)
    ip = parse_ipconfig(raw).get("ip")
    if ip in (None, "dhcp"):
        return ("dhcp", None) if ip == "dhcp" else ("none", None)
    if ip == "manual":
        return "none", None
    return "static", ip


def user_data(vm: VM, fqdn_domain: str | None = None) -> str:
    conf = vm.config
    lines = ["#cloud-config", f"hostname: {vm.name}", "manage_etc_hosts: true"]
    domain = fqdn_domain or (split_list(conf["searchdomain"])[0] if conf.get("searchdomain") else None)
    lines.append(f"fqdn: {vm.name}.{domain}" if domain else f"fqdn: {vm.name}")
    if conf.get("ciuser"):
        lines.append(f"user: {conf['ciuser']}")
    if conf.get("cipassword"):
        lines.append(f"password: {conf['cipassword']}")
    keys = decode_sshkeys(conf.get("sshkeys"))
    if keys:
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {k}" for k in keys]
    lines += ["chpasswd:", "  expire: False", "users:", "  - default"]
    if conf.get("ciupgrade", "1") == "1":
        lines.append("package_upgrade: true")
    return "\n".join(lines) + "\n"


def network_data(vm: VM) -> str:
    config: list[dict[str, Any]] = []
    for idx in range(32):
        net = vm.config.get(f"net{idx}")
        if net is None:
            continue
        mac = (net_mac(net) or "").lower()
        subnets: list[dict[str, Any]] = []
        raw = vm.config.get(f"ipconfig{idx}")
        parsed = parse_ipconfig(raw) if raw else {}
        ip = parsed.get("ip")
        if ip == "dhcp" or (raw is None and idx == 0):
            subnets.append({"type": "dhcp4"})
        elif ip and ip != "manual":
            iface = ipaddress.IPv4Interface(ip)
            sub: dict[str, Any] = {"type": "static", "address": str(iface.ip), "netmask": str(iface.netmask)}
            if "gw" in parsed:
                sub["gateway"] = parsed["gw"]
            subnets.append(sub)
        ip6 = parsed.get("ip6")
        if ip6 == "dhcp":
            subnets.append({"type": "dhcp6"})
        elif ip6 == "auto":
            subnets.append({"type": "ipv6_slaac"})
        elif ip6 and ip6 != "manual":
            sub6: dict[str, Any] = {"type": "static6", "address": ip6}
            if "gw6" in parsed:
                sub6["gateway"] = parsed["gw6"]
            subnets.append(sub6)
        config.append({"type": "physical", "name": f"eth{idx}", "mac_address": mac, "subnets": subnets})
    if vm.config.get("nameserver") or vm.config.get("searchdomain"):
        ns: dict[str, Any] = {"type": "nameserver"}
        if vm.config.get("nameserver"):
            ns["address"] = split_list(vm.config["nameserver"])
        if vm.config.get("searchdomain"):
            ns["search"] = split_list(vm.config["searchdomain"])
        config.append(ns)
    return str(yaml.safe_dump({"version": 1, "config": config}, sort_keys=False))


def meta_data(vm: VM) -> str:
    seed = user_data(vm) + network_data(vm)
    return f"instance-id: {hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()}\n"
