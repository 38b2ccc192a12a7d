"""One lab K3s cluster: a real kube-apiserver + etcd at the init server's address, and its Nodes.

The first server's install starts a :class:`ControlPlane` on a free port of 127.0.0.1 with a CA we
own, so the serving certificate can be re-issued when a server joins (kube-apiserver reloads it from
disk). Every server whose K3s runs, the first one included, answers at its own ``<ip>:6443`` through a
TCP proxy to that apiserver, so an address stops answering when its server is gone, as in K3s.
Nodes are written through the API as kubelets would: registration, labels, taints, ``nodeInfo`` and a
``Ready`` condition heartbeat.
"""

from __future__ import annotations

import base64
import dataclasses
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from k3s_deploy_lab.controlplane import ControlPlane
from k3s_deploy_lab.controlplane.certs import CertificateAuthority, split_sans
from k3s_deploy_lab.guests.k3s.nodes import NodeRecord, lifecycle_taints, status_patch
from k3s_deploy_lab.guests.k3s.proxy import API_PORT, TcpProxy

MERGE = "application/merge-patch+json"
LOOPBACK_SANS = (
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


class LabCluster:
    """A K3s cluster as the guests process runs it."""

    def __init__(
        self,
        cluster_id: str,
        data_dir: Path,
        *,
        init_ip: str,
        password: str,
        etcd: bool,
        sans: list[str],
        log: Callable[[str], None],
    ) -> None:
        self.id = cluster_id
        self.data_dir = data_dir
        self.init_ip = init_ip
        self.password = password
        # set when a server runs with --agent-token: agents may join with node:<this> instead
        self.agent_password: str | None = None
        self.etcd = etcd
        self.sans = list(dict.fromkeys([init_ip, *sans, *LOOPBACK_SANS]))
        self.log = log
        # after `k3s server --cluster-reset` on reset_by: the other servers' db dirs are stale until removed
        self.reset_stale: list[str] = []
        self.reset_by = ""
        pki = data_dir / "pki"
        if (pki / "ca.key").exists() and (pki / "client-ca.key").exists():  # a restart: same cluster CAs
            self.ca = CertificateAuthority.load(pki, "ca")
            self.client_ca = CertificateAuthority.load(pki, "client-ca")
        else:
            self.ca = CertificateAuthority.create(f"k3s-server-ca@{cluster_id}")
            self.client_ca = CertificateAuthority.create(f"k3s-client-ca@{cluster_id}")
        self.plane = ControlPlane(
            data_dir,
            host="127.0.0.1",  # behind the servers' proxies: no server's address is special
            sans=self.sans,
            ca=self.ca,
            client_ca=self.client_ca,
            cluster_name="default",
            log=log,
        )
        self.admin = self.client_ca.issue_client("system:admin", ["system:masters"])
        self.nodes: dict[str, NodeRecord] = {}  # by instance id
        self.proxies: dict[str, TcpProxy] = {}  # by joined server ip
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    @property
    def url(self) -> str:
        """Where the lab itself reaches the apiserver (not a server's address)."""
        return self.plane.url

    def upstream(self) -> tuple[str, int]:
        return (self.plane.host, self.plane.port)

    def answers_at(self, ip: str) -> bool:
        return ip in self.proxies

    def to_json(self) -> dict[str, Any]:
        return {
            "initIp": self.init_ip,
            "password": self.password,
            "agentPassword": self.agent_password,
            "etcd": self.etcd,
            "sans": self.sans,
            "resetStale": self.reset_stale,
            "resetBy": self.reset_by,
            "nodes": {instance: dataclasses.asdict(node) for instance, node in self.nodes.items()},
        }

    @classmethod
    def from_json(
        cls, cluster_id: str, data_dir: Path, data: dict[str, Any], *, log: Callable[[str], None]
    ) -> LabCluster:
        cluster = cls(
            cluster_id,
            data_dir,
            init_ip=data["initIp"],
            password=data["password"],
            etcd=bool(data["etcd"]),
            sans=list(data["sans"]),
            log=log,
        )
        cluster.agent_password = data.get("agentPassword")
        cluster.reset_stale = list(data.get("resetStale") or [])
        cluster.reset_by = str(data.get("resetBy") or "")
        for instance, node in (data.get("nodes") or {}).items():
            cluster.nodes[instance] = NodeRecord(**{**node, "running": False})
        return cluster

    async def start(self) -> None:
        await self.plane.astart()
        self._ssl = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        with tempfile.TemporaryDirectory() as tmp:
            crt, key = self.admin.write(Path(tmp), "admin")
            self._ssl.load_cert_chain(crt, key)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))

    async def close(self) -> None:
        for proxy in self.proxies.values():
            await proxy.close()
        self.proxies.clear()
        if self._session is not None:
            await self._session.close()
        await self.plane.astop()

    # ----- servers joining ------------------------------------------------------------------------

    def add_sans(self, names: list[str]) -> None:
        """Re-issue the serving certificate when new names appear (kube-apiserver reloads it)."""
        new = [n for n in names if n not in self.sans]
        if not new:
            return
        self.sans += new
        ips, dns = split_sans(self.sans)
        serving = self.ca.issue_serving("kube-apiserver", ip_addresses=ips, dns_names=dns)
        serving.write(self.plane.pki_dir, "apiserver")

    async def open_proxy(self, ip: str) -> None:
        if ip in self.proxies:
            return
        proxy = TcpProxy(ip, self.upstream)
        await proxy.start()
        self.proxies[ip] = proxy

    async def close_proxy(self, ip: str) -> None:
        proxy = self.proxies.pop(ip, None)
        if proxy is not None:
            await proxy.close()

    # ----- kubeconfig as K3s writes it ------------------------------------------------------------

    def k3s_yaml(self) -> str:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "clusters": [
                {
                    "cluster": {
                        "certificate-authority-data": b64(self.ca_pem),
                        "server": f"https://127.0.0.1:{API_PORT}",
                    },
                    "name": "default",
                }
            ],
            "contexts": [{"context": {"cluster": "default", "user": "default"}, "name": "default"}],
            "current-context": "default",
            "kind": "Config",
            "preferences": {},
            "users": [
                {
                    "name": "default",
                    "user": {
                        "client-certificate-data": b64(self.admin.cert_pem),
                        "client-key-data": b64(self.admin.key_pem),
                    },
                }
            ],
        }
        return yaml.safe_dump(config, sort_keys=False)

    # ----- Nodes ----------------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        assert self._session is not None and self._ssl is not None
        async with self._session.request(
            method, self.url + path, json=body, ssl=self._ssl, headers={"Content-Type": content_type}
        ) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, data

    async def register(self, node: NodeRecord) -> None:
        """Create or update the Node object (metadata now, status in :meth:`post_status`)."""
        meta = {"name": node.name, "labels": node.labels, "annotations": node.annotations}
        status, _ = await self._request("GET", f"/api/v1/nodes/{node.name}")
        if status == 404:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": meta,
                "spec": {"taints": node.taints or None},
            }
            status, data = await self._request("POST", "/api/v1/nodes", body)
            if status not in (200, 201, 409):
                raise RuntimeError(f"registering node {node.name}: {status} {data}")
        else:
            patch: dict[str, Any] = {"metadata": {"labels": node.labels, "annotations": node.annotations}}
            if node.taints:
                patch["spec"] = {"taints": node.taints}
            await self._request("PATCH", f"/api/v1/nodes/{node.name}", patch, "application/merge-patch+json")
        await self.post_status(node)

    async def post_status(self, node: NodeRecord) -> None:
        """The kubelet's heartbeat, or the node controller's verdict once it stopped coming."""
        status, current = await self._request("GET", f"/api/v1/nodes/{node.name}")
        if status != 200:
            return
        path = f"/api/v1/nodes/{node.name}"
        await self._request("PATCH", path + "/status", status_patch(node, current), MERGE)
        taints = lifecycle_taints(node, current)
        if taints is not None:
            await self._request("PATCH", path, {"spec": {"taints": taints or None}}, MERGE)

    async def delete_node(self, name: str) -> None:
        await self._request("DELETE", f"/api/v1/nodes/{name}")
