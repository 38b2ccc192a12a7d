"""kube-vip's behaviour for the lab: the leader among a cluster's live servers answers on the VIP.

A cluster wants a VIP when a live server's auto-deploy directory holds kube-vip's DaemonSet for the
control plane (``cp_enable: "true"`` and ``address``/``vip_address``), as K3s would run it on every
control-plane node. Leader election as kube-vip does it: the leader keeps the address while it lives;
when it is gone, after the lease runs out (``FAILOVER_SECONDS``), the next live server takes it. The
holder is written to the ``plndr-cp-lock`` Lease in kube-system, as kube-vip does. "Answering" is a
TCP proxy on ``<vip>:6443`` to the cluster's API (TLS passes through, so the serving certificate must
name the VIP: a ``--tls-san``). No live server left: nothing answers. Only loopback VIPs are bound.

The same poll runs the external-load-balancer stand-ins (k3s/balancers.py,
:meth:`VipController.add_load_balancer`): such an address answers while any server of the cluster that
names it lives, with no failover gap and no Lease.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from k3s_deploy_lab.guests.k3s.balancers import LoadBalancers
from k3s_deploy_lab.guests.k3s.datastore import confined
from k3s_deploy_lab.guests.k3s.deploy import MANIFESTS, DeployController
from k3s_deploy_lab.guests.k3s.poller import ClusterPoller
from k3s_deploy_lab.guests.k3s.proxy import TcpProxy

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.cluster import LabCluster
    from k3s_deploy_lab.guests.k3s.control import K3sControl

POLL_SECONDS = 0.5
FAILOVER_SECONDS = 3.0  # kube-vip's vip_leaseduration is 5 s; a standby takes over within it
LEASE = "plndr-cp-lock"


@dataclass
class Vip:
    address: str
    leader: str  # node name
    proxy: TcpProxy
    since: float


def kube_vip_address(text: str) -> str | None:
    """The control-plane VIP of a kube-vip DaemonSet in ``text`` (a manifest file), if any."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError:
        return None
    for doc in docs:
        if doc.get("kind") != "DaemonSet":
            continue
        for container in ((doc.get("spec") or {}).get("template") or {}).get("spec", {}).get(
            "containers"
        ) or []:
            env = {e.get("name"): e.get("value") for e in container.get("env") or [] if isinstance(e, dict)}
            address = env.get("address") or env.get("vip_address")
            if env.get("cp_enable") == "true" and isinstance(address, str) and address:
                return address
    return None


class VipController(ClusterPoller):
    """Runs the VIPs of every cluster of the lab."""

    poll_seconds = POLL_SECONDS
    what = "k3s vip"

    def __init__(self, control: K3sControl) -> None:
        super().__init__(control)
        self.vips: dict[str, Vip] = {}  # by cluster id
        self._lost: dict[str, float] = {}  # cluster id -> when its leader was lost
        self.balancers = LoadBalancers(control)  # external-load-balancer stand-ins

    async def close(self) -> None:
        await super().close()
        await self.balancers.close()
        for vip in self.vips.values():
            await vip.proxy.close()
        self.vips.clear()

    def cluster_at(self, address: str) -> LabCluster | None:
        """The cluster whose VIP answers at ``address`` (a join through the VIP reaches it)."""
        for cluster_id, vip in self.vips.items():
            if vip.address == address and cluster_id in self.control.clusters:
                return self.control.clusters[cluster_id]
        return self.balancers.cluster_at(address)

    async def before_round(self) -> None:
        for cluster_id in list(self.vips):
            if cluster_id not in self.control.clusters:  # dissolved: its address goes with it
                await self.vips.pop(cluster_id).proxy.close()
        await self.balancers.drop_gone()

    def _live_servers(self, cluster: LabCluster) -> dict[str, str | None]:
        """Node name -> the VIP its manifests ask for, for every server whose K3s runs."""
        running = {g.spec.instance_id: g for g in self.control.fleet.running.values()}
        out: dict[str, str | None] = {}
        for instance, install in self.control.installs.items():
            guest, node = running.get(instance), cluster.nodes.get(instance)
            if install.cluster_id != cluster.id or install.role != "server" or guest is None:
                continue
            if not install.enabled or node is None or not node.running:
                continue
            files = DeployController._files(confined(guest.root, MANIFESTS))
            # kube-vip runs once K3s applied its manifest (the deploy controller tracks it)
            found = [kube_vip_address(text) for name, (_, _, text) in files.items() if name in install.addons]
            out[node.name] = next((a for a in found if a), None)
        return out

    def add_load_balancer(self, address: str) -> None:
        """The external-load-balancer stand-in: ``address``:6443 forwards to the live servers of the
        cluster whose serving certificate names it (a ``--tls-san``), health-checked every poll."""
        self.balancers.add(address)

    async def remove_load_balancer(self, address: str) -> None:
        """The load balancer at ``address`` switched off: nothing answers there any more."""
        await self.balancers.remove(address)

    async def sync(self, cluster: LabCluster) -> None:
        live = self._live_servers(cluster)
        await self.balancers.sync(cluster, bool(live))
        wanted = next((a for a in live.values() if a), None)
        current = self.vips.get(cluster.id)
        if current is not None and (current.address != wanted or current.leader not in live):
            self.control.log(f"k3s vip {current.address}: leader {current.leader} is gone")
            await self.vips.pop(cluster.id).proxy.close()
            self._lost[cluster.id] = time.monotonic()
            current = None
        if current is not None or wanted is None or not live:
            return
        if not ipaddress.ip_address(wanted).is_loopback:
            return  # the lab binds nothing outside 127.0.0.0/8
        if time.monotonic() - self._lost.get(cluster.id, 0.0) < FAILOVER_SECONDS:
            return  # the standbys wait for the old leader's lease to run out
        leader = sorted(live)[0]
        proxy = TcpProxy(wanted, cluster.upstream)
        await proxy.start()
        self.vips[cluster.id] = Vip(wanted, leader, proxy, time.time())
        self.control.log(f"k3s vip {wanted}: {leader} is the leader in cluster {cluster.id}")
        with contextlib.suppress(Exception):
            await self._write_lease(cluster, leader)

    async def _write_lease(self, cluster: LabCluster, leader: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{LEASE}"
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        spec: dict[str, Any] = {
            "holderIdentity": leader,
            "leaseDurationSeconds": 5,
            "acquireTime": now,
            "renewTime": now,
        }
        status, _ = await cluster._request("GET", path)
        if status == 404:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": "kube-system"},
                "spec": spec,
            }
            await cluster._request("POST", path.rsplit("/", 1)[0], lease)
        else:
            await cluster._request("PATCH", path, {"spec": spec}, "application/merge-patch+json")
