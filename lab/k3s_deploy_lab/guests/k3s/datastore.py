"""The stand-in's datastore verbs: ``k3s etcd-snapshot save|ls|delete|prune``, scheduled snapshots and
``k3s server --cluster-reset [--cluster-reset-restore-path=FILE]``.

The guest's ``k3s`` script posts these to the guests process (as the installer does); files live in the
guest's own filesystem (default ``/var/lib/rancher/k3s/server/db/snapshots``). Every cluster's
datastore is a real etcd, also for a server started without ``--cluster-init`` (real K3s would use
SQLite through kine there), so those verbs refuse as K3s does when the cluster has no embedded etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from k3s_deploy_lab.controlplane.build import ensure_etcdutl
from k3s_deploy_lab.guests.k3s import snapshots
from k3s_deploy_lab.guests.k3s.artefacts import write_file
from k3s_deploy_lab.guests.k3s.flags import InstallRequest, UsageError, build_request, parse_flags
from k3s_deploy_lab.guests.sandbox import GuestRoot
from k3s_deploy_lab.guests.sshd import RunningGuest

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.cluster import LabCluster
    from k3s_deploy_lab.guests.k3s.control import K3sControl
    from k3s_deploy_lab.guests.k3s.units import Install

SERVER_DIR = "/var/lib/rancher/k3s/server"
RESET_DONE = (
    "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. "
    "Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes"
)
SNAPSHOT_BOOLS = {"snapshot-compress", "etcd-snapshot-compress", "s3", "etcd-s3", "s3-insecure", "debug"}


def confined(root: GuestRoot, guest_path: str) -> Path:
    """The host path of ``guest_path``, refused when a symlink leads it out of the guest's tree."""
    if not guest_path.startswith("/"):
        raise snapshots.SnapshotError(f"{guest_path}: an absolute path is needed")
    base = root.root.resolve()
    target = (base / guest_path.lstrip("/")).resolve()
    if target != base and base not in target.parents:
        raise snapshots.SnapshotError(f"{guest_path}: not a path inside this server")
    return target


def mark_datastore(root: GuestRoot, node_name: str, etcd: bool) -> None:
    """What a K3s server keeps under server/db: ``etcd/name`` (embedded etcd) or ``state.db`` (SQLite)."""
    db = confined(root, snapshots.DB_DIR)
    if etcd and not (db / "etcd" / "name").exists():
        write_file(root, f"{snapshots.DB_DIR}/etcd/name", f"{node_name}-{int(time.time())}\n", 0o600)
    elif not etcd and not (db / "state.db").exists():
        write_file(root, f"{snapshots.DB_DIR}/state.db", "", 0o600)


def restart_request(
    root: GuestRoot, args: list[str], config: list[str], channels: dict[str, str]
) -> InstallRequest:
    """What a server's K3s reads when it starts again: its unit's arguments, env file and config files."""
    env: dict[str, str] = {}
    env_file = confined(root, "/etc/systemd/system/k3s.service.env")
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq:
                env[key.strip()] = value.strip().strip("'\"")
    return build_request(env, list(args), config, channels)


def stale_error(guest: RunningGuest, cluster: LabCluster) -> str | None:
    """Why this server may not start after a cluster-reset elsewhere (None once its db dir is gone)."""
    if guest.spec.instance_id not in cluster.reset_stale:
        return None
    if confined(guest.root, snapshots.DB_DIR).exists():
        return (
            f"starting kubernetes: preparing server: start managed database: etcd: this server's "
            f"{snapshots.DB_DIR} predates the cluster-reset on {cluster.reset_by}; "
            "remove it and start k3s again to rejoin"
        )
    cluster.reset_stale = [i for i in cluster.reset_stale if i != guest.spec.instance_id]
    return None


class Datastore:
    """Snapshots, their schedule and cluster-reset for the clusters ``control`` owns."""

    def __init__(self, control: K3sControl) -> None:
        self.control = control
        self._due: dict[tuple[str, str], float] = {}  # (instance, cron) -> next run
        self._bad_cron: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/k3s/v1/etcd-snapshot", self._snapshot_call)
        app.router.add_post("/k3s/v1/cluster-reset", self._reset_call)

    def start(self) -> None:
        self._task = asyncio.create_task(self._schedule())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ----- helpers --------------------------------------------------------------------------------

    def _server(self, guest: RunningGuest) -> tuple[Install, LabCluster]:
        install = self.control.installs.get(guest.spec.instance_id)
        cluster = self.control.clusters.get(install.cluster_id) if install else None
        if install is None or cluster is None or install.role != "server":
            raise snapshots.SnapshotError(f"etcd database not found in {SERVER_DIR}")
        return install, cluster

    @staticmethod
    def snapshot_dir(install: Install, flags: dict[str, Any]) -> str:
        given = flags.get("dir") or flags.get("etcd-snapshot-dir") or install.flags.get("etcd-snapshot-dir")
        return str(given or snapshots.DEFAULT_DIR)

    async def take(
        self, guest: RunningGuest, install: Install, cluster: LabCluster, prefix: str, where: str
    ) -> str:
        name = snapshots.snapshot_name(prefix, install.node_name)
        host_dir = confined(guest.root, where)
        host_dir.mkdir(parents=True, exist_ok=True)
        size = await snapshots.save(cluster.plane.etcd_url, host_dir / name)
        self.control.log(
            f"k3s etcd snapshot {name} ({size} bytes) on {install.node_name} in cluster {cluster.id}"
        )
        return name

    # ----- k3s etcd-snapshot ----------------------------------------------------------------------

    async def _snapshot_call(self, request: web.Request) -> web.Response:
        form = await request.post()
        guest = self.control._caller(form)
        argv = [str(a) for a in form.getall("arg", [])]
        try:
            text = await self._snapshot(guest, argv)
        except (snapshots.SnapshotError, UsageError, OSError) as exc:
            return web.Response(text=f"1\nFATA[0000] {exc}\n")
        return web.Response(text=f"0\n{text}")

    async def _snapshot(self, guest: RunningGuest, argv: list[str]) -> str:
        verb = argv[0] if argv and not argv[0].startswith("-") else "save"
        rest = argv[1:] if argv and argv[0] == verb else argv
        names = [a for a in rest if not a.startswith("-")] if verb == "delete" else []
        flags = _snapshot_flags([a for a in rest if a not in names])
        install, cluster = self._server(guest)
        if not cluster.etcd:
            raise snapshots.SnapshotError(f"etcd database not found in {SERVER_DIR}")
        where = self.snapshot_dir(install, flags)
        if verb == "save":
            if not install.enabled:
                raise snapshots.SnapshotError(
                    'see server log for details: Post "https://127.0.0.1:6443/db/snapshot": '
                    "dial tcp 127.0.0.1:6443: connect: connection refused"
                )
            name = await self.take(guest, install, cluster, str(flags.get("name") or "on-demand"), where)
            s3 = " (S3 upload is recorded, not done, in the lab)" if _s3(flags, install) else ""
            return f"INFO[0000] Snapshot {name} saved.{s3}\n"
        host_dir = confined(guest.root, where)
        if verb in ("ls", "list"):
            output = str(
                flags.get("o") or flags.get("output") or flags.get("etcd-snapshot-list-format") or ""
            )
            if output == "json":
                return snapshots.json_list(self._cluster_listing(cluster, flags))
            if output not in ("", "table"):
                raise snapshots.SnapshotError(f"invalid output format: {output}")
            return snapshots.table(snapshots.listing(host_dir, where))
        if verb == "delete":
            if not names:
                raise snapshots.SnapshotError("no snapshots given for removal")
            out = []
            for name in names:
                path = confined(guest.root, f"{where.rstrip('/')}/{name}")
                if path.parent != host_dir or not path.is_file():
                    raise snapshots.SnapshotError(f"snapshot {name} not found")
                path.unlink()
                out.append(f"INFO[0000] Snapshot {name} deleted.\n")
            return "".join(out)
        if verb == "prune":
            keep = int(str(flags.get("snapshot-retention") or flags.get("etcd-snapshot-retention") or 5))
            prefix = f"{flags.get('name') or 'on-demand'}-{install.node_name}"
            gone = snapshots.prune(host_dir, prefix, keep)
            return "".join(f"INFO[0000] Removing local snapshot {g}\n" for g in gone)
        raise UsageError(f"No help topic for '{verb}'")

    def _cluster_listing(
        self, cluster: LabCluster, flags: dict[str, Any]
    ) -> list[tuple[str, snapshots.SnapshotFile]]:
        """Every running server's snapshots (real K3s lists them all from its ETCDSnapshotFile objects)."""
        running = {g.spec.instance_id: g for g in self.control.fleet.running.values()}
        out = []
        for instance, other in self.control.installs.items():
            guest = running.get(instance)
            if other.cluster_id != cluster.id or other.role != "server" or guest is None:
                continue
            where = self.snapshot_dir(other, flags)
            out += [(other.node_name, f) for f in snapshots.listing(confined(guest.root, where), where)]
        return out

    # ----- scheduled snapshots --------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for instance, install in list(self.control.installs.items()):
                with contextlib.suppress(Exception):
                    await self._maybe_scheduled(instance, install)

    async def _maybe_scheduled(self, instance: str, install: Install) -> None:
        cluster = self.control.clusters.get(install.cluster_id)
        if install.role != "server" or cluster is None or not cluster.etcd or not install.enabled:
            return
        if install.flags.get("etcd-disable-snapshots"):
            return
        cron = str(install.flags.get("etcd-snapshot-schedule-cron") or snapshots.DEFAULT_CRON)
        now = time.time()
        key = (instance, cron)
        if key not in self._due:
            try:
                self._due[key] = snapshots.next_run(cron, now)
            except ValueError as exc:
                if cron not in self._bad_cron:
                    self._bad_cron.add(cron)
                    self.control.log(f"k3s: invalid etcd-snapshot-schedule-cron {cron!r}: {exc}")
                return
        if now < self._due[key]:
            return
        self._due[key] = snapshots.next_run(cron, now)
        guest = next((g for g in self.control.fleet.running.values() if g.spec.instance_id == instance), None)
        if guest is None:
            return
        where = self.snapshot_dir(install, {})
        await self.take(guest, install, cluster, snapshots.SCHEDULED_PREFIX, where)
        keep = int(str(install.flags.get("etcd-snapshot-retention") or snapshots.DEFAULT_RETENTION))
        prefix = f"{snapshots.SCHEDULED_PREFIX}-{install.node_name}"
        snapshots.prune(confined(guest.root, where), prefix, keep)

    # ----- k3s server --cluster-reset -------------------------------------------------------------

    async def _reset_call(self, request: web.Request) -> web.Response:
        form = await request.post()
        guest = self.control._caller(form)
        argv = [str(a) for a in form.getall("arg", [])]
        try:
            flags = parse_flags(argv[1:] if argv and argv[0] == "server" else argv)
            async with self.control.lock:
                text = await self._reset(guest, flags)
        except (snapshots.SnapshotError, UsageError, OSError) as exc:
            return web.Response(text=f"1\nFATA[0000] starting kubernetes: preparing server: {exc}\n")
        return web.Response(text=f"0\n{text}")

    async def _reset(self, guest: RunningGuest, flags: dict[str, Any]) -> str:
        install, cluster = self._server(guest)
        if not cluster.etcd:
            raise snapshots.SnapshotError(
                "start managed database: --cluster-reset needs embedded etcd (this cluster's first server "
                "was started without --cluster-init)"
            )
        if install.enabled:
            raise snapshots.SnapshotError(
                "start managed database: etcd: listen tcp 127.0.0.1:2380: bind: address already in use "
                "(stop k3s on this server first)"
            )
        restore_path = flags.get("cluster-reset-restore-path")
        lines = []
        if restore_path:
            path = str(restore_path)
            try:
                host = confined(guest.root, path)
            except snapshots.SnapshotError:
                host = None
            if host is None or not host.is_file():
                raise snapshots.SnapshotError(
                    f"start managed database: etcd: snapshot path does not exist: {path}"
                )
            await self._restore(cluster, host)
            lines.append(f"INFO[0001] etcd snapshot {path} restored")
        others = [
            i
            for i, other in self.control.installs.items()
            if other.cluster_id == cluster.id and other.role == "server" and i != guest.spec.instance_id
        ]
        cluster.reset_stale = sorted(set(cluster.reset_stale) | set(others))
        cluster.reset_by = install.node_name
        self.control.save()
        lines.append(f"INFO[0002] {RESET_DONE}")
        return "\n".join(lines) + "\n"

    async def _restore(self, cluster: LabCluster, snapshot: Path) -> None:
        """Stop the cluster's apiserver and etcd, rebuild etcd's data from the snapshot, start again."""
        etcdutl = await asyncio.to_thread(ensure_etcdutl, log=self.control.log)
        plane = cluster.plane
        peer = plane.etcd_url.rsplit(":", 1)[0] + ":2380" if plane.etcd_url else "http://127.0.0.1:2380"
        await plane.astop()
        try:
            await snapshots.restore(etcdutl, snapshot, plane.data_dir / "etcd", peer_url=peer)
        finally:
            plane.sans = tuple(cluster.sans)
            await plane.astart()
        for node in cluster.nodes.values():  # kubelets that still run register again
            if node.running:
                with contextlib.suppress(Exception):
                    await cluster.register(node)


def _s3(flags: dict[str, Any], install: Install) -> bool:
    return bool(flags.get("s3") or flags.get("etcd-s3") or install.flags.get("etcd-s3"))


def _snapshot_flags(args: list[str]) -> dict[str, Any]:
    """``k3s etcd-snapshot`` flags: K3s takes both ``--dir`` and ``--etcd-snapshot-dir`` style names."""
    expanded: list[str] = []
    for arg in args:
        name = arg.lstrip("-").partition("=")[0]
        expanded.append(arg if "=" in arg or name not in SNAPSHOT_BOOLS else f"--{name}=true")
    return parse_flags(expanded)
