"""New clusters start side by side, as K3s first servers on separate machines do.

A first server (no ``--server``) makes a cluster of its own: the stand-in starts that cluster's etcd
and kube-apiserver, seconds of real time. Done under the lab's one lock (which keeps installs,
clusters and joins consistent), twenty first servers came up one after the other: twenty clusters
at once measured the lock, not the operator. So a first server's control plane is started before
the lock is taken, and its install, under the lock, takes the started cluster
(:meth:`Prestarts.take`, called by ``Joining.create_cluster``). Everything else still runs under the
lock: joins to an existing cluster go one at a time, as etcd admits one new member at a time.

A benchmark's install duration (``installSeconds``: download and unit start, as the timings of a real
install) runs beside that start, not before it: a real first server's unit start includes starting its
own etcd and kube-apiserver, so the stand-in's seconds of real start-up are inside the install's time,
not added to it (before, the first server's install took ``installSeconds`` plus about 3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from k3s_deploy_lab.guests.k3s import tokens
from k3s_deploy_lab.guests.k3s.artefacts import read_token_file
from k3s_deploy_lab.guests.k3s.cluster import LabCluster
from k3s_deploy_lab.guests.k3s.flags import InstallRequest
from k3s_deploy_lab.guests.k3s.units import InstallFailed
from k3s_deploy_lab.guests.sshd import RunningGuest

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.control import K3sControl


async def start_cluster(
    control: K3sControl, guest: RunningGuest, req: InstallRequest, token: str | None
) -> LabCluster:
    """A new cluster with this guest as its first server, its control plane running (not yet listed)."""
    ip = guest.spec.addresses[0]
    password = tokens.parse(token).password if token else tokens.new_password()
    cluster_id = f"{guest.spec.vmid}-{secrets.token_hex(3)}"
    cluster = LabCluster(
        cluster_id,
        control.state_dir / "clusters" / cluster_id,
        init_ip=ip,
        password=password,
        etcd=req.bool("cluster-init"),
        sans=req.many("tls-san"),
        log=control.log,
    )
    try:
        await cluster.start()
        if token:  # a secure token on the first server must name the CA it just made
            tokens.check_ca(token, cluster_ca_pem=cluster.ca_pem)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await cluster.close()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        raise InstallFailed(f"starting kubernetes: {exc}") from exc
    return cluster


class Prestarts:
    """Clusters started before the lock, by the instance id of the install that will take them."""

    def __init__(self, control: K3sControl) -> None:
        self.control = control
        self._ready: dict[str, LabCluster] = {}

    def _creates_cluster(self, guest: RunningGuest, req: InstallRequest) -> bool:
        if req.command != "server" or req.first("server"):
            return False
        existing = self.control.installs.get(guest.spec.instance_id)
        restart = existing is not None and existing.role == "server"
        return not (restart and existing is not None and existing.cluster_id in self.control.clusters)

    async def _prestart(self, guest: RunningGuest, req: InstallRequest) -> None:
        if not self._creates_cluster(guest, req):
            return
        try:
            token = req.first("token") or read_token_file(guest.root, req.first("token-file"))
            self._ready[guest.spec.instance_id] = await start_cluster(self.control, guest, req, token)
        except (InstallFailed, FileNotFoundError, ValueError, tokens.TokenError):
            return  # the install under the lock meets the same problem and reports it as K3s does

    def take(self, instance_id: str) -> LabCluster | None:
        return self._ready.pop(instance_id, None)

    @contextlib.asynccontextmanager
    async def around(
        self, guest: RunningGuest, req: InstallRequest, lock: asyncio.Lock, *, at_least: float = 0.0
    ) -> AsyncIterator[None]:
        """Start a new cluster's control plane during ``at_least`` seconds of install time (or longer,
        if it takes longer), then hold ``lock`` for the install; a started cluster the install did not
        take (it failed before) is stopped again."""
        await asyncio.gather(self._prestart(guest, req), asyncio.sleep(max(at_least, 0.0)))
        try:
            async with lock:
                yield
        finally:
            left = self.take(guest.spec.instance_id)
            if left is not None:
                with contextlib.suppress(Exception):
                    await left.close()
                shutil.rmtree(left.data_dir, ignore_errors=True)
