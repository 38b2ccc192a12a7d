"""From a K3sCluster spec to the members it wants and the ProxmoxVM manifests that back them (pure).

Network settings (the old ``configure-ips``) are folded into each child's cloud-init here: a static
address from the pool with gateway, nameservers and search domain, or DHCP when there is no pool, on
the NIC ``network.interface`` names (ipconfigN). :func:`plan` reads who holds which pool address from
the ProxmoxVMs themselves (this cluster's children and every other VM on the same credentials).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from k3s_deploy.api.k3scluster import ClusterNetwork, K3sClusterSpec, NodeTemplate
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.k3scluster import discovery, ipam
from k3s_deploy.services.k3scluster.topology import (
    ClusterRef,
    Group,
    Member,
    child_manifest,
    cloned_members,
    owned_by,
)


@dataclass(frozen=True)
class Desired:
    members: list[Member]
    manifests: dict[str, dict[str, Any]]
    static_ips: dict[str, str]

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return data


def common_spec(spec: K3sClusterSpec) -> dict[str, Any]:
    """What every child shares with the cluster: how to reach and trust Proxmox."""
    out: dict[str, Any] = {"credentialsRef": _dump(spec.credentials_ref)}
    if spec.insecure_skip_tls_verify:
        out["insecureSkipTLSVerify"] = True
    if spec.fingerprint:
        out["fingerprint"] = spec.fingerprint
    return out


def template_spec(template: NodeTemplate, network: ClusterNetwork | None) -> dict[str, Any]:
    """A NodeTemplate as ProxmoxVM spec fields (clone -> source.clone)."""
    data = _dump(template)
    clone = data.pop("clone")
    data["source"] = {"clone": clone}
    if network is not None and network.address_cidr:
        data.setdefault("guestAgent", {})["addressCIDR"] = network.address_cidr
    return data


def groups(spec: K3sClusterSpec) -> list[Group]:
    """The cloned groups of a spec: servers, the default agents, then each named pool in spec order."""
    assert spec.servers is not None
    network, servers = spec.network, spec.servers
    out = [
        Group(
            "server",
            servers.replicas,
            template_spec(servers.template, network),
            node_labels=servers.node_labels,
            node_taints=tuple(servers.node_taints),
        )
    ]
    if spec.agents is not None:
        a = spec.agents
        out.append(
            Group(
                "agent",
                a.replicas,
                template_spec(a.template, network),
                None,
                a.node_labels,
                tuple(a.node_taints),
            )
        )
    for p in spec.agent_pools:
        out.append(
            Group(
                "agent",
                p.replicas,
                template_spec(p.template, network),
                p.name,
                p.node_labels,
                tuple(p.node_taints),
            )
        )
    return out


def pool_entries(network: ClusterNetwork) -> tuple[list[str], int, list[str]]:
    """(pool entries, prefix length, reserved addresses) of a static pool."""
    pool = network.ip_pool
    assert pool is not None
    if pool.cidr:
        net = ipaddress.ip_network(pool.cidr, strict=False)
        entries, prefix = [str(net)], net.prefixlen
    else:
        entries, prefix = [f"{pool.start}-{pool.end}"], int(pool.prefix_length or 32)
    reserved = [*pool.exclude, *([network.gateway] if network.gateway else []), *network.nameservers]
    return entries, prefix, [str(r) for r in reserved]


def desired(
    cluster: ClusterRef,
    spec: K3sClusterSpec,
    *,
    allocations: Mapping[str, str],
    discovered_vms: Sequence[VmSummary] | None = None,
    held_elsewhere: Iterable[str] = (),
) -> Desired:
    """Members (servers first) and the manifest of each child.

    ``allocations`` are the addresses this cluster's children hold, by child name: members keep theirs,
    and those of children no longer wanted stay taken until the child is gone (its VM still runs).
    ``held_elsewhere`` are pool addresses other clusters' VMs hold or have just claimed.
    """
    common = common_spec(spec)
    network = spec.network
    if spec.discovery is not None:
        d = spec.discovery
        if d.cloud_init is not None:
            common = {**common, "cloudInit": _dump(d.cloud_init)}
        if network is not None and network.address_cidr:
            common = {**common, "guestAgent": {"addressCIDR": network.address_cidr}}
        members = discovery.members(cluster.name, d, discovered_vms, common=common)
    else:
        members = cloned_members(cluster, common=common, groups=groups(spec))

    static: dict[str, str] = {}
    manifests: dict[str, dict[str, Any]] = {}
    dns: dict[str, Any] = {}
    if network is not None:
        dns = {"nameservers": list(network.nameservers), "searchDomain": network.search_domain}
    if network is not None and network.ip_pool is not None:
        entries, prefix, reserved = pool_entries(network)
        names = [m.name for m in members]
        leaving = [address for name, address in allocations.items() if name not in names]
        reserved = [*reserved, *leaving, *held_elsewhere]
        static = ipam.allocate(entries, names, allocations, reserved=reserved)
    for member in members:
        ip_config: dict[str, Any] | None
        if member.name in static:
            ip_config = {
                "address": f"{static[member.name]}/{prefix}",
                "gateway": network.gateway if network else None,
            }
            ip_config = {k: v for k, v in ip_config.items() if v}
        elif not member.adopted:
            ip_config = {"dhcp": True}
        else:
            ip_config = None  # an adopted VM keeps its addressing unless the cluster hands out a static one
        manifests[member.name] = child_manifest(
            cluster, member, ip_config=ip_config, dns=dns, interface=network.interface if network else 0
        )
    return Desired(members=members, manifests=manifests, static_ips=static)


async def plan(
    cluster: ClusterRef,
    spec: K3sClusterSpec,
    *,
    objects: ClusterObjects,
    claims: ipam.Claims,
    children: Iterable[Mapping[str, Any]],
    discovered_vms: Sequence[VmSummary] | None = None,
    in_proxmox: Mapping[str, str] | None = None,
    read_only: bool = False,
) -> Desired:
    """:func:`desired` with the pool addresses read from the ProxmoxVMs, not from status.

    ``in_proxmox``: addresses of this cluster's VMs that have no child (read back after a move, see
    :mod:`.recover`); a child's spec wins over them.

    ``children`` are this cluster's ProxmoxVMs as listed now; with a pool, the namespace's other
    ProxmoxVMs on the same credentials Secret are listed too. Only the same Secret in the same namespace
    counts as the same Proxmox: clusters on other Secrets or in other namespaces need disjoint pools.
    ``read_only``: claim nothing (a paused pass only checks the addresses it is about to dial).
    """
    mine = [c for c in children if owned_by(c, cluster)]
    recorded = {**(in_proxmox or {})}
    recorded.update({c["metadata"]["name"]: a for c in mine if (a := ipam.address_of(c)) is not None})
    key = (cluster.namespace, spec.credentials_ref.name)
    if spec.network is None or spec.network.ip_pool is None:
        want = desired(cluster, spec, allocations=recorded, discovered_vms=discovered_vms)
        if not read_only:
            claims.hold(key, cluster.uid, ())
        return want
    vms = await objects.list_namespace_vms(cluster.namespace)
    # from here to hold() there is no await: the claims read and the claim made are one step
    held = ipam.held_by_others(vms, mine=mine, credentials=key[1])
    held |= claims.others(key, cluster.uid) - set(recorded.values())
    want = desired(cluster, spec, allocations=recorded, discovered_vms=discovered_vms, held_elsewhere=held)
    if not read_only:
        claims.hold(key, cluster.uid, want.static_ips.values())
    return want


def spec_drift(want: Mapping[str, Any], have: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level spec fields of ``want`` that ``have`` lacks or holds differently (a merge patch).

    A nested mapping is satisfied when every key it names holds the wanted value: the apiserver fills
    schema defaults in (``guestAgent.timeoutSeconds`` beside the ``addressCIDR`` we set), and a merge
    patch would never remove them, so comparing whole mappings would patch the child on every pass."""
    return {k: v for k, v in want.items() if not _holds(v, have.get(k))}


def _holds(want: Any, have: Any) -> bool:
    if isinstance(want, Mapping) and isinstance(have, Mapping):
        return all(_holds(v, have.get(k)) for k, v in want.items())
    return bool(want == have)
