"""Pool addresses of this cluster's VMs that have no ProxmoxVM child: after a move or a restore.

The children's specs are the record of who holds which pool address (:mod:`.ipam`). A cluster
re-applied on a new management cluster has no children yet, so its members would be given addresses
afresh, lowest first in member order, and a cluster with a history (agents first, servers added
later) would see its VMs readdressed. Its VMs still carry the cluster's tag and their names, and their
Proxmox config still holds the address: that is read back, once per VM without a child, and costs
nothing in steady state (the VM list is the shared, cached one). The tag derives from the cluster's
stable id (services.cluster_identity), so only VMs of whoever holds the id's Secret are read.
"""

from __future__ import annotations

from collections.abc import Collection

from k3s_deploy.services.k3scluster.ipam import address_of
from k3s_deploy.services.k3scluster.state import ClusterPass


async def addresses_in_proxmox(r: ClusterPass, children: Collection[str]) -> dict[str, str]:
    """Member name -> pool address, for this cluster's VMs in Proxmox whose child is missing."""
    network = r.spec.network
    if network is None or network.ip_pool is None or r.deps.list_vms is None or r.deps.proxmox is None:
        return {}
    if not r.ref.identity:
        return {}  # a cluster without a stable id yet has never been moved
    credentials = await r.credentials()
    tag = r.ref.tag
    orphans = [
        vm
        for vm in await r.deps.list_vms(credentials)
        if tag in vm.tags and vm.name and vm.name not in children and not vm.template
    ]
    out: dict[str, str] = {}
    for vm in orphans:
        config = await r.deps.proxmox(credentials).vm_config(vm.node, vm.vmid)
        raw = str(config.get(f"ipconfig{network.interface}") or "")
        ip = next((p[3:] for p in raw.split(",") if p.startswith("ip=")), "")
        found = address_of({"spec": {"cloudInit": {"ipConfig": {"address": ip}}}})
        if found is not None and vm.name is not None:
            out[vm.name] = found
    return out
