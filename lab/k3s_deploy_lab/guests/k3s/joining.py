"""Installing K3s on a guest as K3s would: a first server creates a cluster, others join one through
the ``--server`` URL they were given (checked as K3s checks it: reachable, token, CA), agents need one."""

from __future__ import annotations

import contextlib
import secrets
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from k3s_deploy_lab.guests.k3s import settings_files, tokens
from k3s_deploy_lab.guests.k3s.artefacts import node_record, read_token_file, write_file
from k3s_deploy_lab.guests.k3s.cluster import LabCluster
from k3s_deploy_lab.guests.k3s.datastore import mark_datastore, stale_error
from k3s_deploy_lab.guests.k3s.flags import InstallRequest
from k3s_deploy_lab.guests.k3s.prestart import start_cluster
from k3s_deploy_lab.guests.k3s.proxy import API_PORT
from k3s_deploy_lab.guests.k3s.units import Install, InstallFailed
from k3s_deploy_lab.guests.sshd import RunningGuest

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.control import K3sControl


class Joining:
    """Starts the k3s service of an install: creates, joins or restarts a cluster."""

    def __init__(self, control: K3sControl) -> None:
        self.control = control

    async def start_service(self, guest: RunningGuest, req: InstallRequest) -> None:
        spec = guest.spec
        ip = spec.addresses[0]
        existing = self.control.installs.get(spec.instance_id)
        if problem := settings_files.at_start(guest.root, req.command):
            raise InstallFailed(problem)
        try:
            token = req.first("token") or read_token_file(guest.root, req.first("token-file"))
        except FileNotFoundError as exc:
            raise InstallFailed(str(exc)) from exc
        server = req.first("server")
        if req.command == "agent" and not server:
            raise InstallFailed("Error: --server is required")
        if server:
            cluster = self.reachable(server)
            if req.command == "agent" and not token:
                raise InstallFailed("Error: --token is required")
            if not token:
                raise InstallFailed(
                    "starting kubernetes: preparing server: token is required to join a cluster"
                )
            try:
                tokens.check(
                    token,
                    cluster_ca_pem=cluster.ca_pem,
                    password=cluster.password,
                    server_url=server.rstrip("/"),
                    role=req.command,
                    agent_password=cluster.agent_password,
                )
            except tokens.TokenError as exc:
                if req.command == "agent":
                    raise InstallFailed(
                        f"Error: failed to retrieve configuration from server: {exc}"
                    ) from exc
                raise InstallFailed(
                    f"starting kubernetes: preparing server: failed to validate token: {exc}"
                ) from exc
            if req.command == "server" and not cluster.etcd:
                raise InstallFailed(
                    "starting kubernetes: preparing server: failed to join cluster: "
                    f"{server} does not run embedded etcd (its first server was started without --cluster-init)"
                )
        elif (
            existing is not None
            and existing.role == "server"
            and existing.cluster_id in self.control.clusters
        ):
            cluster = self.control.clusters[existing.cluster_id]
            if req.bool("cluster-init") and not cluster.etcd:  # K3s converts to embedded etcd
                self.control.log(f"k3s cluster {cluster.id}: converting to embedded etcd (--cluster-init)")
                cluster.etcd = True
            if token:  # a restart with a token: it must be this cluster's (K3s decrypts its bootstrap data)
                try:
                    tokens.check(
                        token, cluster_ca_pem=cluster.ca_pem, password=cluster.password, server_url=""
                    )
                except tokens.TokenError as exc:
                    raise InstallFailed(f"starting kubernetes: preparing server: {exc}") from exc
        else:
            cluster = await self.create_cluster(guest, req, token)
        if req.command == "server" and req.first("agent-token"):
            cluster.agent_password = tokens.parse(str(req.first("agent-token"))).password
        if (
            existing is not None
            and existing.cluster_id != cluster.id
            and existing.cluster_id in self.control.clusters
        ):
            old = self.control.clusters[existing.cluster_id]
            gone = old.nodes.pop(spec.instance_id, None)
            if gone is not None:
                with contextlib.suppress(Exception):
                    await old.delete_node(gone.name)
        if req.command == "server":
            problem = stale_error(guest, cluster)
            if problem:
                raise InstallFailed(problem)
        node = node_record(guest, req, cluster)
        previous = cluster.nodes.get(spec.instance_id)
        if previous is not None and previous.name != node.name:
            await cluster.delete_node(previous.name)
        cluster.nodes[spec.instance_id] = node
        if req.command == "server":
            cluster.add_sans([ip, *req.many("tls-san")])
            try:
                await cluster.open_proxy(ip)
            except OSError as exc:
                raise InstallFailed(
                    f"starting kubernetes: listen tcp {ip}:{API_PORT}: {exc.strerror}"
                ) from exc
            mode = int(str(req.first("write-kubeconfig-mode") or "600"), 8)
            write_file(guest.root, "/etc/rancher/k3s/k3s.yaml", cluster.k3s_yaml(), mode)
            full = tokens.full_token(cluster.ca_pem, cluster.password)
            write_file(guest.root, "/var/lib/rancher/k3s/server/node-token", full + "\n", 0o600)
            write_file(guest.root, "/var/lib/rancher/k3s/server/token", full + "\n", 0o600)
            agent = (
                tokens.full_token(cluster.ca_pem, cluster.agent_password, user="node")
                if cluster.agent_password
                else full
            )
            write_file(guest.root, "/var/lib/rancher/k3s/server/agent-token", agent + "\n", 0o600)
            write_file(
                guest.root, "/var/lib/rancher/k3s/server/tls/server-ca.crt", cluster.ca_pem.decode(), 0o644
            )
        password = guest.root.path("/etc/rancher/node/password")
        if not password.exists():
            write_file(guest.root, "/etc/rancher/node/password", secrets.token_hex(16) + "\n", 0o600)
        write_file(guest.root, "/var/lib/rancher/k3s/agent/etc/k3s-version", req.version + "\n", 0o644)
        try:
            await cluster.register(node)
        except Exception as exc:
            cluster.nodes.pop(spec.instance_id, None)
            raise InstallFailed(f"Failed to register node: {exc}") from exc
        if req.command == "server":
            mark_datastore(guest.root, node.name, cluster.etcd)
        self.control.installs[spec.instance_id] = Install(
            role=req.command,
            version=req.version,
            cluster_id=cluster.id,
            node_name=node.name,
            flags=req.redacted_flags(),
            args=list(req.args),
            server_url=str(server) if server and req.command == "agent" else None,
        )
        self.control.save()
        self.control.log(
            f"k3s {req.command} {node.name} ({ip}) {req.version} in cluster {cluster.id} at {cluster.url}"
        )

    def reachable(self, server: str) -> LabCluster:
        parts = urlsplit(server)
        host, port = parts.hostname or "", parts.port or 443
        refused = (
            f'failed to get CA certs: Get "{server.rstrip("/")}/cacerts": dial tcp {host}:{port}: connect: '
            "connection refused"
        )
        if port != API_PORT:
            raise InstallFailed(refused)
        behind_vip = self.control.vip.cluster_at(host)
        if behind_vip is not None:  # kube-vip's leader answers there
            if host not in behind_vip.sans:
                raise InstallFailed(
                    f'failed to get CA certs: Get "{server.rstrip("/")}/cacerts": tls: failed to verify '
                    f"certificate: x509: certificate is not valid for {host} (add it as --tls-san)"
                )
            return behind_vip
        owner = self.control.fleet.by_address(host)
        for cluster in self.control.clusters.values():
            if cluster.answers_at(host) and owner is not None:
                install = self.control.installs.get(owner.spec.instance_id)
                if install is not None and install.enabled:
                    return cluster
        raise InstallFailed(refused)

    async def create_cluster(self, guest: RunningGuest, req: InstallRequest, token: str | None) -> LabCluster:
        # started before the lab's lock when it could be (k3s/prestart.py), else here
        taken = self.control.prestarts.take(guest.spec.instance_id)
        cluster = taken or await start_cluster(self.control, guest, req, token)
        self.control.clusters[cluster.id] = cluster
        return cluster
