"""Which network addresses the operator may connect to, and on whose behalf (docs/security.md).

A tenant writes URLs the operator fetches (air-gap artefacts with ``fetchFrom: Operator``, the K3s
channel server) and the Proxmox ``url`` of a credentials Secret. Without a rule, those requests would
reach what only the operator's pod can reach: its own loopback, the cluster's private network, the
cloud metadata service. The rule is applied to every address a name resolves to, and the caller then
connects to exactly the address that was checked, so DNS cannot answer differently in between.

Pure: stdlib only, so settings, services and adapters can all use it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from k3s_deploy.errors import AddressRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The rules, by the name a refusal reports. The first four hold whatever the allow-list says.
METADATA = "Metadata"
UNSPECIFIED = "Unspecified"
LINK_LOCAL = "LinkLocal"
MULTICAST = "Multicast"
LOOPBACK = "Loopback"
PRIVATE = "Private"
ALWAYS_REFUSED = frozenset({METADATA, UNSPECIFIED, LINK_LOCAL, MULTICAST})

_DESCRIBED = {
    METADATA: "a cloud metadata address",
    UNSPECIFIED: "an unspecified address (0.0.0.0 or ::, which reach the operator's own host)",
    LINK_LOCAL: "a link-local address (169.254.0.0/16 or fe80::/10)",
    MULTICAST: "a multicast address",
    LOOPBACK: "a loopback address",
    PRIVATE: "a private or otherwise non-public address",
}

# Cloud metadata services: AWS, GCP, Azure, OpenStack, Oracle (169.254.169.254, link-local anyway),
# AWS over IPv6, Alibaba, Oracle's legacy address; and the names that lead there.
_METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",
        "169.254.170.2/32",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "192.0.0.192/32",
    )
)
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def _translated(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 translation address stands for (mapped, NAT64, IPv4-compatible)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in n for n in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _embedded(ip: IPAddress) -> list[IPAddress]:
    """IPv4 addresses an IPv6 address carries besides itself (6to4 relay target, Teredo client)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[IPAddress] = []
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.append(ip.teredo[1])
    return found


def _classify_one(ip: IPAddress) -> str | None:
    if any(ip.version == n.version and ip in n for n in _METADATA_NETWORKS):
        return METADATA
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return UNSPECIFIED
    if ip.is_loopback:
        return LOOPBACK
    if ip.is_link_local:
        return LINK_LOCAL
    if ip.is_multicast:
        return MULTICAST
    if not ip.is_global:
        return PRIVATE
    return None


def classify(ip: IPAddress) -> str | None:
    """The rule that refuses ``ip`` for a request on a tenant's behalf; None for a public address.
    A translation address (``::ffff:a.b.c.d``, NAT64) is judged as the IPv4 address it reaches; an
    address that embeds another (6to4, Teredo) by the stricter of the two."""
    translated = _translated(ip)
    candidates = [translated] if translated is not None else [*_embedded(ip), ip]
    for candidate in candidates:
        rule = _classify_one(candidate)
        if rule is not None:
            return rule
    return None


def node_address_problem(text: str) -> str | None:
    """Why a node may never be contacted at ``text`` (a metadata, unspecified, link-local or multicast
    address, or not an IP address at all), else None. Loopback and private addresses are where nodes
    live (a homelab's LAN; the lab's guests), so they pass; a member's address comes from a ProxmoxVM's
    status or the spec's pool, both of which a tenant can write."""
    ip = parse_ip(text)
    if ip is None:
        return "not an IP address"
    rule = classify(ip)
    return _DESCRIBED[rule] if rule in ALWAYS_REFUSED else None


def parse_ip(text: str) -> IPAddress | None:
    """``text`` as an IP address in its canonical form only (no decimal or hex forms), else None."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The address ``inet_aton`` reads from a numeric host that is not dotted-quad (decimal, octal,
    hex, fewer parts), else None."""
    if not text or not all(c in "0123456789abcdefxABCDEFX." for c in text) or not text[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


@dataclass(frozen=True)
class AllowList:
    """The operator's ``fetchAllowedHosts``: host names (``mirror.example.com``, ``*.example.com``,
    ``*`` for any host), IP addresses and CIDR networks. Names say where downloads may come from; only
    addresses and networks exempt an address from the private/loopback rule."""

    entries: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    any_host: bool = False
    networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        kept: list[str] = []
        any_host = False
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            kept.append(entry)
            wrong = ValueError(
                f"{raw!r} is not a host name, '*.domain', '*', an IP address or a CIDR network "
                "(write hosts without scheme, port or path)"
            )
            if entry == "*":
                any_host = True
            elif entry.startswith("*."):
                suffixes.append(entry[1:])
            elif "/" in entry or parse_ip(entry) is not None:
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError:
                    raise wrong from None
            elif all(c.isalnum() or c in "-." for c in entry):
                names.add(entry)
            else:
                raise wrong
        return cls(tuple(kept), frozenset(names), tuple(suffixes), any_host, tuple(networks))

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def exempts(self, ip: IPAddress) -> bool:
        """True when ``ip`` (or the IPv4 address it carries) lies in a listed address or network."""
        translated = _translated(ip)
        return any(
            candidate.version == net.version and candidate in net
            for candidate in (ip, *([translated] if translated is not None else []))
            for net in self.networks
        )

    def admits(self, host: str) -> bool:
        """True when a URL's host is listed (by name, or as an address inside a listed network)."""
        host = host.lower().rstrip(".")
        ip = parse_ip(host)
        if ip is not None:
            return self.any_host or self.exempts(ip)
        return self.any_host or host in self.names or any(host.endswith(s) for s in self.suffixes)


@dataclass(frozen=True)
class AddressPolicy:
    """The address rule for one kind of request. ``purpose`` names it in messages; ``allow_private``
    keeps loopback and private addresses (Proxmox is usually on one); ``fix`` says how to allow one."""

    purpose: str
    allowed: AllowList = AllowList()
    allow_private: bool = False
    fix: str = ""

    def check_name(self, host: str) -> None:
        if host.lower().rstrip(".") in METADATA_NAMES:
            raise self._refusal(host, host, METADATA)

    def check(self, host: str, ip: IPAddress) -> None:
        """Raise ``AddressRefused`` when the operator must not connect to ``ip`` (which ``host`` named)."""
        rule = classify(ip)
        if rule is None:
            return
        if rule not in ALWAYS_REFUSED and (self.allow_private or self.allowed.exempts(ip)):
            return
        raise self._refusal(host, str(ip), rule)

    def check_literal(self, host: str) -> None:
        """Check a URL's host when it is an IP address (clients connect to those without resolving),
        also in the legacy forms the C resolver reads (``2130706433``, ``0x7f.1``, ``127.1``)."""
        self.check_name(host)
        ip = parse_ip(host) or legacy_ipv4(host)
        if ip is not None:
            self.check(host, ip)

    def resolve(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and check every address; connect only to what this returns."""
        self.check_name(host)
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        return self.checked(host, (str(info[4][0]) for info in infos))

    def checked(self, host: str, addresses: Iterable[str]) -> list[str]:
        found: list[str] = []
        for address in addresses:
            ip = parse_ip(address)
            if ip is None:
                raise self._refusal(host, address, PRIVATE)
            self.check(host, ip)
            if address not in found:
                found.append(address)
        return found

    def _refusal(self, host: str, address: str, rule: str) -> AddressRefused:
        where = host if host == address else f"{host} ({address})"
        hint = "" if rule in ALWAYS_REFUSED or not self.fix else f"; {self.fix}"
        return AddressRefused(
            f"refused to connect to {where} for the {self.purpose}: {_DESCRIBED[rule]}{hint}",
            reason=f"{rule}AddressRefused",
        )
