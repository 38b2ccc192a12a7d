"""Static address allocation from ``spec.network.ipPool`` (the old tool's ``configure-ips``).

Deterministic: an address once given to a node stays with it while the node exists and the address is
still in the pool; new nodes get the lowest free address; no two nodes ever share one.

The record of who holds what is the ProxmoxVM specs themselves (``spec.cloudInit.ipConfig.address``),
never ``status.ipAllocations`` (a cache that backups, restores and moves lose). Several clusters may
draw from one pool: every ProxmoxVM of the namespace on the same credentials Secret holds its address
against the others, and :class:`Claims` holds what a pass chose until its children exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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


def address_of(vm: Mapping[str, Any]) -> str | None:
    """The static address a ProxmoxVM's spec gives its guest (cloud-init ipConfig, on whichever NIC
    ``cloudInit.interface`` names), without the prefix length; None for DHCP or no cloud-init."""
    cloud_init = (vm.get("spec") or {}).get("cloudInit") or {}
    parsed = _parse(str((cloud_init.get("ipConfig") or {}).get("address") or ""))
    return str(parsed) if parsed is not None else None


def credentials_of(vm: Mapping[str, Any]) -> str | None:
    """Name of the credentials Secret a ProxmoxVM or K3sCluster spec refers to."""
    name = ((vm.get("spec") or {}).get("credentialsRef") or {}).get("name")
    return str(name) if name else None


def _age(vm: Mapping[str, Any]) -> tuple[str, str]:
    meta = vm.get("metadata") or {}
    return str(meta.get("creationTimestamp") or "~"), str(meta.get("name") or "")


def held_by_others(
    vms: Iterable[Mapping[str, Any]], *, mine: Iterable[Mapping[str, Any]], credentials: str
) -> set[str]:
    """Addresses that ProxmoxVMs other than ``mine`` hold on the same ``credentials`` Secret.

    ``vms`` are the namespace's ProxmoxVMs (one namespace: a Secret name means the same Proxmox only
    there). Where one of ``mine`` and another VM already hold the same address (left by an older
    version or a hand edit), the older object keeps it and only the younger one is moved.
    """
    own = list(mine)
    own_keys = {_key(vm) for vm in own}
    eldest: dict[str, tuple[str, str]] = {}
    for vm in own:
        address = address_of(vm)
        if address is not None:
            eldest[address] = min(eldest.get(address, _age(vm)), _age(vm))
    held: set[str] = set()
    for vm in vms:
        if _key(vm) in own_keys or credentials_of(vm) != credentials:
            continue
        address = address_of(vm)
        if address is not None and not (address in eldest and eldest[address] < _age(vm)):
            held.add(address)
    return held


def _key(vm: Mapping[str, Any]) -> tuple[str, str]:
    meta = vm.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Claims:
    """Addresses the passes of this process have chosen, per cluster, until the cluster is deleted.

    A pass lists the ProxmoxVMs, allocates, then creates its children: two clusters whose passes run
    at the same moment would both miss the other's not-yet-created children and pick the same lowest
    free address. So the choice is claimed at once (no ``await`` between reading the claims and
    claiming) and every other cluster on the same credentials treats it as held, as the ProxmoxVM
    controller does with vmids. One operator process is active at a time (kopf peering).
    """

    def __init__(self) -> None:
        self._by_cluster: dict[str, tuple[tuple[str, str], frozenset[str]]] = {}

    def others(self, key: tuple[str, str], cluster_uid: str) -> set[str]:
        """Addresses claimed by other clusters on ``key`` (namespace, credentials Secret)."""
        out: set[str] = set()
        for uid, (where, addresses) in self._by_cluster.items():
            if uid != cluster_uid and where == key:
                out |= addresses
        return out

    def hold(self, key: tuple[str, str], cluster_uid: str, addresses: Iterable[str]) -> None:
        """Replace what ``cluster_uid`` holds with ``addresses`` (its whole current allocation)."""
        self._by_cluster[cluster_uid] = (key, frozenset(addresses))

    def release(self, cluster_uid: str) -> None:
        self._by_cluster.pop(cluster_uid, None)


def _parse(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.split("/", 1)[0].strip()) if text else None
    except ValueError:
        return None
