"""PVE's named parameter formats (`pve-node`, `pve-tag-list`, `urlencoded`, ...) and property strings.

Each checker returns None when the value is fine, else the text PVE puts after "invalid format - ".
Formats the simulator does not model are accepted, as long as their property-string keys are known.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

NODE_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
STORAGE_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.IGNORECASE)
CONFIGID_RE = re.compile(r"^[a-z][a-z0-9_]+$", re.IGNORECASE)
DNS_LABEL = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
DNS_RE = re.compile(rf"^(?:{DNS_LABEL}\.)*{DNS_LABEL}$")
TAG_RE = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)
URLENCODED_RE = re.compile(r"^[-%a-zA-Z0-9_.!~*'()]*$")
POOL_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
LIST_SPLIT = re.compile(r"[,; ]+")


def split_list(value: str) -> list[str]:
    """PVE splits list-valued strings on commas, semicolons and spaces."""
    return [part for part in LIST_SPLIT.split(value.strip()) if part]


def _node(v: str) -> str | None:
    return None if NODE_RE.match(v) else "value does not look like a valid node name"


def _vmid(v: str) -> str | None:
    return None if re.fullmatch(r"[1-9]\d{2,8}", v) else "value does not look like a valid VM ID"


def _storage(v: str) -> str | None:
    return None if STORAGE_RE.match(v) else f"storage ID '{v}' contains illegal characters"


def _configid(v: str) -> str | None:
    return None if CONFIGID_RE.match(v) else f"invalid configuration ID '{v}'"


def _configid_list(v: str) -> str | None:
    for part in split_list(v):
        if not re.fullmatch(r"[a-z][a-z_\-]*\d*", part):
            return f"invalid configuration ID '{part}'"
    return None


def _dns(v: str) -> str | None:
    return None if DNS_RE.match(v) else "value does not look like a valid DNS name"


def _tags(v: str) -> str | None:
    for tag in split_list(v):
        if not TAG_RE.match(tag):
            return "invalid characters in tag"
    return None


def _urlencoded(v: str) -> str | None:
    return None if URLENCODED_RE.match(v) else f"invalid urlencoded string: {v}"


def _pool(v: str) -> str | None:
    return None if POOL_RE.match(v) else f"invalid pool ID '{v}'"


def _address_list(v: str) -> str | None:
    for part in split_list(v):
        try:
            ipaddress.ip_address(part)
        except ValueError:
            return f"value '{part}' does not look like a valid IP address"
    return None


def _cidr(v: str) -> str | None:
    try:
        ipaddress.ip_interface(v)
    except ValueError:
        return "value does not look like a valid CIDR network"
    return None if "/" in v else "value does not look like a valid CIDR network"


def parse_ipconfig(v: str) -> dict[str, str]:
    """Parse `ip=..,gw=..,ip6=..,gw6=..` (raises ValueError with PVE's wording)."""
    out: dict[str, str] = {}
    for part in v.split(","):
        if not part:
            continue
        key, sep, val = part.partition("=")
        if not sep or key not in ("ip", "gw", "ip6", "gw6"):
            raise ValueError(f"format error\n{key}: property is not defined in schema")
        out[key] = val
    ip = out.get("ip")
    if ip is not None and ip not in ("dhcp", "manual"):
        try:
            iface = ipaddress.ip_interface(ip)
        except ValueError as exc:
            raise ValueError(
                f"format error\nip: invalid format - value does not look like a valid IPv4 network ({exc})"
            ) from None
        if iface.version != 4 or "/" not in ip:
            raise ValueError(
                "format error\nip: invalid format - value does not look like a valid IPv4 network"
            )
    if "gw" in out:
        try:
            ipaddress.IPv4Address(out["gw"])
        except ValueError:
            raise ValueError(
                "format error\ngw: invalid format - value does not look like a valid IPv4 address"
            ) from None
        if "ip" not in out:
            raise ValueError("gateway specified without specifying an IP address")
    ip6 = out.get("ip6")
    if ip6 is not None and ip6 not in ("dhcp", "auto", "manual"):
        try:
            ipaddress.IPv6Interface(ip6)
        except ValueError:
            raise ValueError(
                "format error\nip6: invalid format - value does not look like a valid IPv6 network"
            ) from None
    if "gw6" in out and "ip6" not in out:
        raise ValueError("gateway specified without specifying an IP address")
    return out


def _ipconfig(v: str) -> str | None:
    try:
        parse_ipconfig(v)
    except ValueError as exc:
        return str(exc)
    return None


def _task_status_types(v: str) -> str | None:
    bad = [t for t in split_list(v) if t.lower() not in ("ok", "warning", "error", "unknown")]
    return f"invalid task status type '{bad[0]}'" if bad else None


NAMED: dict[str, Callable[[str], str | None]] = {
    "pve-node": _node,
    "pve-vmid": _vmid,
    "pve-storage-id": _storage,
    "pve-configid": _configid,
    "pve-configid-list": _configid_list,
    "dns-name": _dns,
    "pve-tag-list": _tags,
    "urlencoded": _urlencoded,
    "pve-poolid": _pool,
    "address-list": _address_list,
    "CIDR": _cidr,
    "pve-qm-ipconfig": _ipconfig,
    "pve-task-status-type-list": _task_status_types,
}

_BOOL_WORDS = {"1", "0", "on", "off", "yes", "no", "true", "false"}


def parse_property_string(value: str, fmt: dict[str, Any]) -> dict[str, str]:
    """Split `k=v,k=v` with PVE's default-key rule (raises ValueError naming the bad key)."""
    default_key = next((k for k, s in fmt.items() if isinstance(s, dict) and s.get("default_key")), None)
    out: dict[str, str] = {}
    for part in value.split(","):
        if part == "":
            continue
        key, sep, val = part.partition("=")
        if not sep:
            if default_key is None:
                raise ValueError(f"value without key, but schema does not define a default key: {part}")
            key, val = default_key, part
        spec = fmt.get(key)
        if not isinstance(spec, dict):
            raise ValueError(
                f"format error\n{key}: property is not defined in schema and the schema does not allow additional properties"
            )
        if "alias" in spec and "keyAlias" in spec:
            out[spec["keyAlias"]] = key
            key = spec["alias"]
            spec = fmt.get(key, {})
        elif "alias" in spec:
            key = spec["alias"]
            spec = fmt.get(key, {})
        kind = spec.get("type")
        if kind == "boolean" and val.lower() not in _BOOL_WORDS:
            raise ValueError(f"format error\n{key}: type check ('boolean') failed - got '{val}'")
        if kind == "integer" and not re.fullmatch(r"[+-]?\d+", val):
            raise ValueError(f"format error\n{key}: type check ('integer') failed - got '{val}'")
        if kind == "integer" and "minimum" in spec and int(val) < float(spec["minimum"]):
            raise ValueError(f"format error\n{key}: value must have a minimum value of {spec['minimum']}")
        if "enum" in spec and val not in spec["enum"]:
            raise ValueError(
                f"format error\n{key}: value '{val}' does not have a value in the enumeration '{', '.join(spec['enum'])}'"
            )
        out[key] = val
    return out


def check_format(fmt: Any, value: str) -> str | None:
    """None when ``value`` satisfies ``fmt`` (a format name or a property-string dict)."""
    if isinstance(fmt, dict):
        try:
            parse_property_string(value, fmt)
        except ValueError as exc:
            return str(exc)
        return None
    checker = NAMED.get(str(fmt))
    return checker(value) if checker else None
