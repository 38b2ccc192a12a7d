"""Static address allocation from ``spec.network.ipPool`` (the old tool's ``configure-ips``).

Pure and deterministic: an address once given to a node stays with it while the node exists and the
address is still in the pool; new nodes get the lowest free address; no two nodes ever share one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from k3s_deploy import errors

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_POOL = 65536


class PoolExhausted(errors.InvalidSpec):
    reason = "IPPoolExhausted"


def expand_pool(entries: Iterable[str]) -> list[Address]:
    """Addresses of the pool in order. Entries: ``10.0.0.5``, ``10.0.0.5-10.0.0.9`` or ``10.0.0.0/28``.

    A CIDR yields its usable hosts (network and broadcast excluded for IPv4 prefixes up to /30).
    """
    seen: set[Address] = set()
    out: list[Address] = []
    for raw in entries:
        entry = raw.strip()
        try:
            if "-" in entry:
                first_text, last_text = (part.strip() for part in entry.split("-", 1))
                first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
                if first.version != last.version or int(last) < int(first):
                    raise ValueError("range end before start")
                if int(last) - int(first) >= _MAX_POOL:
                    raise ValueError("range too large")
                items: Iterable[Address] = (
                    ipaddress.ip_address(int(first) + i) for i in range(int(last) - int(first) + 1)
                )
            elif "/" in entry:
                network = ipaddress.ip_network(entry, strict=False)
                if network.num_addresses > _MAX_POOL:
                    raise ValueError("network too large")
                items = network.hosts()
            else:
                items = [ipaddress.ip_address(entry)]
        except ValueError as exc:
            raise errors.InvalidSpec(
                f"spec.network.ipPool entry {raw!r} is not an address, a range a-b or a CIDR: {exc}",
                reason="InvalidIPPool",
            ) from exc
        for address in items:
            if address not in seen:
                seen.add(address)
                out.append(address)
    return out


def allocate(
    pool: Sequence[str],
    nodes: Sequence[str],
    existing: Mapping[str, str],
    *,
    reserved: Iterable[str] = (),
) -> dict[str, str]:
    """Give every node in ``nodes`` an address; keep ``existing`` ones that are still valid.

    ``reserved`` (gateway, nameservers, addresses used by other clusters) is never handed out.
    Raises :class:`PoolExhausted` when the pool cannot cover every node.
    """
    addresses = expand_pool(pool)
    in_pool = set(addresses)
    blocked = {_parse(r) for r in reserved} - {None}
    taken: dict[Address, str] = {}
    result: dict[str, str] = {}
    for node in nodes:
        current = _parse(existing.get(node, ""))
        if current is not None and current in in_pool and current not in blocked and current not in taken:
            taken[current] = node
            result[node] = str(current)
    free = (a for a in addresses if a not in taken and a not in blocked)
    for node in nodes:
        if node in result:
            continue
        address = next(free, None)
        if address is None:
            raise PoolExhausted(
                f"spec.network.ipPool has {len(addresses)} address(es), {len(blocked & in_pool)} reserved, "
                f"but {len(nodes)} nodes need one: add addresses to the pool or lower the replicas"
            )
        taken[address] = node
        result[node] = str(address)
    return result


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.split("/", 1)[0].strip()) if text else None
    except ValueError:
        return None
