"""The K3s stand-in's brain: installs, joins, upgrades and uninstalls as K3s would, over loopback HTTP.

Guests reach it through the installer script and the scripts it leaves (``k3s-uninstall.sh``,
``k3s-killall.sh``), which ``POST /k3s/v1/install|uninstall|killall``; a secret file written into each
guest at boot says which guest calls. It owns the clusters (k3s/cluster.py), keeps their Nodes' status
in step with the VMs' power, and persists everything so a restart of the guests process keeps them.
The installer and release endpoints themselves are in k3s/releases.py, creating and joining clusters
in k3s/joining.py, the units and their ``systemctl`` in k3s/units.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from k3s_deploy_lab.guests.chaos import LabChaos
from k3s_deploy_lab.guests.fleet import GuestFleet
from k3s_deploy_lab.guests.k3s import detach, scripts, settings_files, units, upstream
from k3s_deploy_lab.guests.k3s.artefacts import (
    BIN,
    config_texts,
    remove_artefacts,
    write_artefacts,
    write_file,
)
from k3s_deploy_lab.guests.k3s.cluster import LabCluster
from k3s_deploy_lab.guests.k3s.datastore import Datastore, mark_datastore, restart_request, stale_error
from k3s_deploy_lab.guests.k3s.deploy import DeployController
from k3s_deploy_lab.guests.k3s.flags import (
    DEFAULT_CHANNELS,
    VERSION_RE,
    UsageError,
    build_request,
)
from k3s_deploy_lab.guests.k3s.joining import Joining
from k3s_deploy_lab.guests.k3s.prestart import Prestarts
from k3s_deploy_lab.guests.k3s.releases import add_release_routes
from k3s_deploy_lab.guests.k3s.units import Install as Install
from k3s_deploy_lab.guests.k3s.units import InstallFailed as InstallFailed
from k3s_deploy_lab.guests.k3s.vip import VipController
from k3s_deploy_lab.guests.sandbox import GuestRoot
from k3s_deploy_lab.guests.sshd import GuestSpec, RunningGuest

HEARTBEAT_SECONDS = 10.0


class K3sControl:
    """Owns the lab's K3s clusters and answers the guests' installer calls."""

    def __init__(
        self,
        state_dir: Path,
        fleet: GuestFleet,
        *,
        log: Callable[[str], None],
        chaos: LabChaos | None = None,
    ) -> None:
        self.chaos = chaos or LabChaos()
        self.state_dir = state_dir
        self.fleet = fleet
        self.log = log
        self.base_url = ""
        self.kubectl: str | None = None
        self.clusters: dict[str, LabCluster] = {}
        self.channels: dict[str, str] = dict(DEFAULT_CHANNELS)
        self.installs: dict[str, Install] = {}  # by instance id
        self._guest_tokens: dict[str, int] = {}  # secret -> vmid
        self._lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        self.datastore = Datastore(self)
        self.deploy = DeployController(self)
        self.joining = Joining(self)
        self.prestarts = Prestarts(self)  # new clusters' control planes start outside the lock
        self.vip = VipController(self)

    @property
    def lock(self) -> asyncio.Lock:
        return self._lock

    def save(self) -> None:
        self._save()

    @property
    def install_url(self) -> str:
        return f"{self.base_url}/k3s/install.sh"

    # ----- lifecycle ------------------------------------------------------------------------------

    def guest_binds(self) -> dict[str, str]:
        """Read-only host files every guest sees (the real kubectl behind ``k3s kubectl``)."""
        from k3s_deploy_lab.controlplane.build import cached_binaries

        found = cached_binaries()
        if found and "kubectl" in found:
            self.kubectl = str(found["kubectl"])
            return {self.kubectl: scripts.KUBECTL_IN_GUEST}
        return {}

    async def start(self) -> None:
        """Bring back the clusters of an earlier run (their etcd data and CAs are on disk), then beat."""
        await self._restore()
        self._heartbeat = asyncio.create_task(self._beat())
        self.datastore.start()
        self.deploy.start()
        self.vip.start()

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _save(self) -> None:
        """Persist clusters and installs (0600: it holds the cluster tokens) so a restart keeps them."""
        data = {
            "clusters": {cid: c.to_json() for cid, c in self.clusters.items()},
            "installs": {inst: dataclasses.asdict(i) for inst, i in self.installs.items()},
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_private(self._state_file, json.dumps(data, indent=1))

    async def _restore(self) -> None:
        if not self._state_file.exists():
            return
        data = json.loads(self._state_file.read_text())
        self.installs = {inst: Install(**i) for inst, i in (data.get("installs") or {}).items()}
        for cluster_id, saved in (data.get("clusters") or {}).items():
            cluster = LabCluster.from_json(
                cluster_id, self.state_dir / "clusters" / cluster_id, saved, log=self.log
            )
            try:
                await cluster.start()
            except Exception as exc:
                self.log(f"k3s cluster {cluster_id} could not be restarted: {exc}")
                with contextlib.suppress(Exception):
                    await cluster.close()
                continue
            self.clusters[cluster_id] = cluster
            running = {g.spec.instance_id: g for g in self.fleet.running.values()}
            for instance, node in cluster.nodes.items():
                install = self.installs.get(instance)
                node.running = instance in running and install is not None and install.enabled
                with contextlib.suppress(Exception):
                    if node.running and node.role == "server":
                        await cluster.open_proxy(node.ip)
                    await cluster.post_status(node)
            self.log(f"k3s cluster {cluster_id} restarted at {cluster.url} with {len(cluster.nodes)} node(s)")
        self.installs = {i: inst for i, inst in self.installs.items() if inst.cluster_id in self.clusters}
        self._save()

    async def close(self) -> None:
        await self.datastore.close()
        await self.deploy.close()
        await self.vip.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for cluster in list(self.clusters.values()):
            await cluster.close()
        self.clusters.clear()

    def add_routes(self, app: web.Application) -> None:
        add_release_routes(app, lambda: self.base_url, self.channels)
        app.router.add_post("/k3s/v1/install", self._install)
        app.router.add_post("/k3s/v1/uninstall", self._uninstall)
        app.router.add_post("/k3s/v1/killall", self._killall)
        app.router.add_post("/k3s/v1/service", self._service)
        app.router.add_post("/k3s/v1/detach", detach.route(self))
        self.datastore.add_routes(app)

    # ----- power and heartbeats -------------------------------------------------------------------

    async def on_power(self, spec: GuestSpec, root: GuestRoot, on: bool) -> None:
        if on:
            secret = secrets.token_hex(16)
            path = root.path(scripts.GUEST_TOKEN_PATH)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secret + "\n")
            path.chmod(0o600)
            self._guest_tokens = {k: v for k, v in self._guest_tokens.items() if v != spec.vmid}
            self._guest_tokens[secret] = spec.vmid
            write_file(root, "/usr/local/sbin/systemctl", scripts.systemctl_sh(self.base_url), 0o755)
            detach.install(root, self.base_url)
        else:
            self._guest_tokens = {k: v for k, v in self._guest_tokens.items() if v != spec.vmid}
        install = self.installs.get(spec.instance_id)
        cluster = self.clusters.get(install.cluster_id) if install else None
        if install is None or cluster is None:
            return
        node = cluster.nodes.get(spec.instance_id)
        if node is None:
            return
        if on:  # the k3s unit is enabled: it starts again at boot (also after k3s-killall.sh)
            install.enabled = True
        node.running = on
        with contextlib.suppress(Exception):
            if install.role == "server":
                await (cluster.open_proxy(node.ip) if on else cluster.close_proxy(node.ip))
            await cluster.post_status(node)

    async def on_purge(self, instance_id: str) -> None:
        """The VM is gone for good: a cluster whose servers are all gone goes too."""
        install = self.installs.pop(instance_id, None)
        if install is None:
            return
        cluster = self.clusters.get(install.cluster_id)
        if cluster is None:
            return
        node = cluster.nodes.get(instance_id)
        if node is not None:
            node.running = False
            if node.ip in cluster.proxies:
                await cluster.close_proxy(node.ip)
        servers = [
            i for i, inst in self.installs.items() if inst.cluster_id == cluster.id and inst.role == "server"
        ]
        if not servers:
            await self._dissolve(cluster)
        self._save()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            for cluster in list(self.clusters.values()):
                for node in list(cluster.nodes.values()):
                    if node.running:
                        with contextlib.suppress(Exception):
                            await cluster.post_status(node)

    async def _dissolve(self, cluster: LabCluster) -> None:
        self.clusters.pop(cluster.id, None)
        self.log(f"k3s cluster {cluster.id} at {cluster.url} has no servers left; stopping it")
        await cluster.close()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        self._save()

    # ----- HTTP -----------------------------------------------------------------------------------

    def _caller(self, form: Any) -> RunningGuest:
        vmid = self._guest_tokens.get(str(form.get("guest", "")).strip())
        guest = self.fleet.running.get(vmid) if vmid is not None else None
        if guest is None:
            raise web.HTTPForbidden(text="[ERROR]  unknown lab guest\n")
        return guest

    async def _install(self, request: web.Request) -> web.Response:
        form = await request.post()
        guest = self._caller(form)
        env = {str(k)[4:]: str(v) for k, v in form.items() if str(k).startswith("env.")}
        argv = [str(a) for a in form.getall("arg", [])]
        out: list[str] = []
        try:
            req = build_request(env, argv, config_texts(guest.root), self.channels)
            if env.get("INSTALL_K3S_SKIP_DOWNLOAD", "").lower() == "true":
                # Air-gapped: the binary is already in place; its version is what gets installed.
                binary = guest.root.path(f"{BIN}/k3s")
                found = scripts.version_of(binary.read_text(errors="replace")) if binary.is_file() else None
                if found is None:
                    raise UsageError(f"Executable k3s binary not found at {BIN}/k3s")
                req.version = found
                out.append("[INFO]  Skipping k3s download and verify")
            else:
                out.append(f"[INFO]  Using {req.version} as release")
                out.append(
                    f"[INFO]  Downloading hash https://github.com/k3s-io/k3s/releases/download/{req.version}"
                    "/sha256sum-amd64.txt"
                )
                if not VERSION_RE.match(req.version):
                    raise UsageError("Download failed")
                out.append(
                    f"[INFO]  Downloading binary https://github.com/k3s-io/k3s/releases/download/{req.version}/k3s"
                )
                out.append("[INFO]  Verifying binary download")
        except UsageError as exc:
            out.append(f"[ERROR]  {exc}")
            return web.Response(status=400, text="\n".join(out) + "\n")
        service = "k3s" if req.command == "server" else "k3s-agent"
        write_artefacts(guest, req, service, self.base_url, out)
        out.append(f"[INFO]  systemd: Enabling {service} unit")
        out.append(f"[INFO]  systemd: Starting {service}")
        try:  # download + unit start take installSeconds (a benchmark's), a new control plane's start within
            async with self.prestarts.around(guest, req, self._lock, at_least=self.chaos.install_seconds):
                await self.joining.start_service(guest, req)
        except InstallFailed as exc:
            out += units.failed(guest, service, str(exc))
            return web.Response(status=500, text="\n".join(out) + "\n")
        return web.Response(text="\n".join(out) + "\n")

    async def _uninstall(self, request: web.Request) -> web.Response:
        guest = self._caller(await request.post())
        async with self._lock:
            install = self.installs.pop(guest.spec.instance_id, None)
            cluster = self.clusters.get(install.cluster_id) if install else None
            if install is not None and cluster is not None:
                node = cluster.nodes.pop(guest.spec.instance_id, None)
                if node is not None:
                    with contextlib.suppress(Exception):
                        await cluster.delete_node(node.name)
                    await cluster.close_proxy(node.ip)
                servers = [
                    i for i in self.installs.values() if i.cluster_id == cluster.id and i.role == "server"
                ]
                if install.role == "server" and not servers:
                    await self._dissolve(cluster)
            remove_artefacts(guest.root)
            self._save()
        return web.Response(text="")

    async def _killall(self, request: web.Request) -> web.Response:
        guest = self._caller(await request.post())
        await self._set_service(guest, False)
        return web.Response(text="")

    async def _set_service(self, guest: RunningGuest, running: bool) -> None:
        """Stop (k3s-killall.sh, systemctl stop) or start (systemctl start/restart) this guest's k3s.

        A server's start reads its unit's command line, env file and config files again (K3s reads them
        when it starts): ``--cluster-init`` converts a cluster without embedded etcd, and the snapshot
        settings take effect. Raises :class:`InstallFailed` when K3s would not start.
        """
        async with self._lock:
            install = self.installs.get(guest.spec.instance_id)
            cluster = self.clusters.get(install.cluster_id) if install else None
            if install is not None and cluster is not None:
                node = cluster.nodes.get(guest.spec.instance_id)
                if problem := running and settings_files.on_restart(guest.root, install, node, self.channels):
                    raise InstallFailed(problem)
                if running and install.role == "server":
                    await self._restart_server(guest, install, cluster)
                install.enabled = running
                if node is not None:
                    node.running = running and upstream.connect(self, guest, install)
                    with contextlib.suppress(Exception):
                        await (cluster.register(node) if running else cluster.post_status(node))
            self._save()

    async def _service(self, request: web.Request) -> web.Response:
        return await units.service(self, request)

    async def _restart_server(self, guest: RunningGuest, install: Install, cluster: LabCluster) -> None:
        try:
            req = restart_request(guest.root, install.args, config_texts(guest.root), self.channels)
        except UsageError as exc:
            raise InstallFailed(str(exc)) from exc
        problem = stale_error(guest, cluster)
        if problem:
            raise InstallFailed(problem)
        install.flags = req.redacted_flags()
        if req.bool("cluster-init") and not cluster.etcd:
            self.log(f"k3s cluster {cluster.id}: converting to embedded etcd (--cluster-init at restart)")
            cluster.etcd = True
            node = cluster.nodes.get(guest.spec.instance_id)
            if node is not None:
                node.etcd = True
                node.labels["node-role.kubernetes.io/etcd"] = "true"
        cluster.add_sans([guest.spec.addresses[0], *req.many("tls-san")])
        mark_datastore(guest.root, install.node_name, cluster.etcd)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.with_suffix(".tmp").replace(path)
