"""The lab's stand-in for external load balancers a user runs in front of a cluster's servers.

Each address (added by a test, as a user sets one up) answers on ``<address>:6443`` on its own, as a
TCP proxy to the cluster whose serving certificate names it (a ``--tls-san``), while any server of that
cluster lives: no failover gap and no Lease (a load balancer's health check drops a dead backend
within a poll). Several addresses can front one cluster at once, as when a user moves the cluster to
a new load balancer and keeps the old one until every node uses the new one. Removing an address
stops it answering (the old load balancer switched off). Only loopback addresses are bound.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from k3s_deploy_lab.guests.k3s.proxy import TcpProxy

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.cluster import LabCluster
    from k3s_deploy_lab.guests.k3s.control import K3sControl


class LoadBalancers:
    def __init__(self, control: K3sControl) -> None:
        self.control = control
        self.addresses: set[str] = set()
        self.proxies: dict[str, tuple[str, TcpProxy]] = {}  # address -> (cluster id, proxy)

    def add(self, address: str) -> None:
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"{address}: the lab binds nothing outside 127.0.0.0/8")
        self.addresses.add(address)

    async def remove(self, address: str) -> None:
        self.addresses.discard(address)
        await self._stop(address)

    def cluster_at(self, address: str) -> LabCluster | None:
        found = self.proxies.get(address)
        return self.control.clusters.get(found[0]) if found else None

    async def sync(self, cluster: LabCluster, live: bool) -> None:
        """Forward each address this cluster's certificate names while a server of it lives."""
        for address in sorted(self.addresses):
            mine = self.proxies.get(address, (cluster.id, None))[0] == cluster.id
            if not mine:
                continue
            want = live and address in cluster.sans
            running = address in self.proxies
            if running and not want:
                await self._stop(address)
            elif want and not running:
                proxy = TcpProxy(address, cluster.upstream)
                await proxy.start()
                self.proxies[address] = (cluster.id, proxy)
                self.control.log(f"k3s load balancer {address}: forwarding to cluster {cluster.id}")

    async def drop_gone(self) -> None:
        """Addresses of dissolved clusters stop answering."""
        for address, (cluster_id, _) in list(self.proxies.items()):
            if cluster_id not in self.control.clusters:
                await self._stop(address)

    async def close(self) -> None:
        for address in list(self.proxies):
            await self._stop(address)

    async def _stop(self, address: str) -> None:
        found = self.proxies.pop(address, None)
        if found is not None:
            await found[1].close()
            self.control.log(f"k3s load balancer {address}: stopped")
