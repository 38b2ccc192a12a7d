"""A real Kubernetes control plane on loopback: etcd + kube-apiserver with TLS and RBAC.

This is what the lab and the integration tests talk to instead of a mock, started the way
controller-runtime's envtest does it (no controller-manager, no scheduler, no kubelets). It is also
the building block for simulated K3s servers: the bind host (any 127.x.y.z), the port, the serving
CA and extra SANs are parameters, and several control planes can run side by side.

Use it as ``async with ControlPlane(dir) as cp:`` or, in a pytest session fixture, ``cp.start()`` /
``cp.stop()``. Either way the children are spawned by the calling thread (see ``processes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from k3s_deploy_lab.controlplane import processes
from k3s_deploy_lab.controlplane.build import ensure_binaries
from k3s_deploy_lab.controlplane.certs import (
    CertificateAuthority,
    KeyPair,
    service_account_key_pair,
    split_sans,
    write_kubeconfig,
)

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUPS = ("system:masters",)
# Names an in-cluster client may use for the apiserver; free to include, cheap to have.
IN_CLUSTER_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


class ControlPlaneError(RuntimeError):
    """etcd or kube-apiserver did not start or did not become ready."""


class ControlPlane:
    """etcd + kube-apiserver bound to ``host``; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        sans: Iterable[str] = (),
        ca: CertificateAuthority | None = None,
        client_ca: CertificateAuthority | None = None,
        binaries: Mapping[str, Path] | None = None,
        record_pid: Callable[[int], None] | None = None,
        log: Callable[[str], None] | None = None,
        cluster_name: str = "k3s-deploy-lab",
        service_cluster_ip_range: str = "10.0.0.0/24",
        service_account_issuer: str | None = None,
        extra_apiserver_args: Sequence[str] = (),
        ready_timeout: float = 120.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = processes.require_loopback(host)
        self._requested_port = port
        self.port = port or 0
        self.sans = tuple(sans)
        self._ca = ca
        self._client_ca = client_ca
        self._binaries = dict(binaries) if binaries is not None else None
        self._record_pid = record_pid
        self._log = log or (lambda message: None)
        self.cluster_name = cluster_name
        self.service_cluster_ip_range = service_cluster_ip_range
        self._issuer = service_account_issuer
        self._extra_args = tuple(extra_apiserver_args)
        self.ready_timeout = ready_timeout
        self.pki_dir = self.data_dir / "pki"
        self.logs_dir = self.data_dir / "logs"
        self.admin_kubeconfig = self.data_dir / "admin.kubeconfig"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self.etcd_url = ""
        self._etcd_ports: list[int] = []
        self._context: ssl.SSLContext | None = None  # admin TLS context for our own probes
        self.start_seconds: float | None = None  # spawn to /readyz OK, for the curious

    # ----- public surface -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca(self) -> CertificateAuthority:
        """The CA that signed the serving certificate (clients verify the apiserver with it)."""
        assert self._ca is not None, "start() first"
        return self._ca

    @property
    def client_ca(self) -> CertificateAuthority:
        """The CA whose client certificates the apiserver accepts (CN = user, O = groups)."""
        assert self._client_ca is not None, "start() first"
        return self._client_ca

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self._etcd, self._apiserver) if p is not None]

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._etcd, self._apiserver))

    def mint_client(self, user: str, groups: Iterable[str] = ()) -> KeyPair:
        return self.client_ca.issue_client(user, groups)

    def mint_kubeconfig(
        self,
        user: str,
        groups: Iterable[str] = (),
        *,
        path: Path | None = None,
        server: str | None = None,
        namespace: str | None = None,
    ) -> Path:
        """Write a kubeconfig authenticating as ``user`` in ``groups``; return its path."""
        groups = tuple(groups)
        if path is None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join((user, *groups)))[:100]
            path = self.data_dir / "kubeconfigs" / f"{slug}.kubeconfig"
        return write_kubeconfig(
            path,
            server=server or self.url,
            ca_pem=self.ca.cert_pem,
            client=self.mint_client(user, groups),
            user=user,
            cluster_name=self.cluster_name,
            namespace=namespace,
        )

    def version(self) -> dict[str, Any]:
        """GET /version (as the admin)."""
        status, body = self._get("/version")
        if status != 200:
            raise ControlPlaneError(f"/version answered {status}: {body[:200]}")
        result: dict[str, Any] = json.loads(body)
        return result

    # ----- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver and block until /readyz is OK."""
        started = time.monotonic()
        self._prepare()
        try:
            self._spawn_etcd()
            self._wait(self._etcd_ready, "etcd", self.logs_dir / "etcd.log")
            self._spawn_apiserver()
            self._wait(self._apiserver_ready, "kube-apiserver", self.logs_dir / "kube-apiserver.log")
        except BaseException:
            self.stop()
            raise
        self._ready(started)
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; idempotent. The data dir stays (a restart reuses it)."""
        for attr in ("_apiserver", "_etcd"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is not None:
                processes.stop_group(proc)
                setattr(self, attr, None)

    async def astart(self) -> ControlPlane:
        """Like :meth:`start` without blocking the event loop (children spawned on the loop thread)."""
        started = time.monotonic()
        await asyncio.to_thread(self._prepare)  # may build binaries the first time: minutes
        try:
            self._spawn_etcd()
            await self._await(self._etcd_ready, "etcd", self.logs_dir / "etcd.log")
            self._spawn_apiserver()
            await self._await(self._apiserver_ready, "kube-apiserver", self.logs_dir / "kube-apiserver.log")
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self.stop))
            raise
        self._ready(started)
        return self

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> ControlPlane:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.astop())

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----- internals ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Binaries, ports and the PKI; the CAs and SA key survive restarts of the same data dir."""
        if self._etcd is not None or self._apiserver is not None:
            raise ControlPlaneError("already started")
        if self._binaries is None:
            self._binaries = ensure_binaries(log=self._log)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._ca is None:
            self._ca = self._load_or_create_ca("ca", f"{self.cluster_name}-server-ca")
        else:
            self._ca.write(self.pki_dir, "ca")
        if self._client_ca is None:
            self._client_ca = self._load_or_create_ca("client-ca", f"{self.cluster_name}-client-ca")
        else:
            self._client_ca.write(self.pki_dir, "client-ca")
        if not (self.pki_dir / "sa.key").exists():
            sa = service_account_key_pair()
            sa.write(self.pki_dir, "sa")
        apiserver_port, *self._etcd_ports = processes.free_ports(self.host, 3)
        self.port = self._requested_port or apiserver_port
        self._context = None
        ips, dns = split_sans([self.host, *self.sans])
        if self.host == "127.0.0.1":
            dns.append("localhost")
        serving = self._ca.issue_serving(
            "kube-apiserver", ip_addresses=ips, dns_names=[*dns, *IN_CLUSTER_NAMES]
        )
        serving.write(self.pki_dir, "apiserver")
        write_kubeconfig(
            self.admin_kubeconfig,
            server=self.url,
            ca_pem=self._ca.cert_pem,
            client=self._client_ca.issue_client(ADMIN_USER, ADMIN_GROUPS),
            user=ADMIN_USER,
            cluster_name=self.cluster_name,
        )

    def _load_or_create_ca(self, stem: str, common_name: str) -> CertificateAuthority:
        if (self.pki_dir / f"{stem}.crt").exists() and (self.pki_dir / f"{stem}.key").exists():
            return CertificateAuthority.load(self.pki_dir, stem)
        ca = CertificateAuthority.create(common_name)
        ca.write(self.pki_dir, stem)
        return ca

    def _spawn_etcd(self) -> None:
        assert self._binaries is not None
        client_port, peer_port = self._etcd_ports
        self.etcd_url = f"http://{self.host}:{client_port}"
        peer_url = f"http://{self.host}:{peer_port}"
        args = [
            str(self._binaries["etcd"]),
            "--name=lab",
            f"--data-dir={self.data_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=lab={peer_url}",
            "--unsafe-no-fsync",  # a lab database: speed over durability
            "--log-level=warn",
        ]
        self._etcd = processes.spawn(args, log_path=self.logs_dir / "etcd.log", record_pid=self._record_pid)

    def _spawn_apiserver(self) -> None:
        assert self._binaries is not None
        pki = self.pki_dir
        issuer = self._issuer or f"{self.url}/"
        args = [
            str(self._binaries["kube-apiserver"]),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            f"--secure-port={self.port}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--service-cluster-ip-range={self.service_cluster_ip_range}",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer={issuer}",
            f"--service-account-key-file={pki / 'sa.crt'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # Endpoints may not hold loopback addresses; nothing in the lab routes via the Service.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            *self._extra_args,
        ]
        self._apiserver = processes.spawn(
            args, log_path=self.logs_dir / "kube-apiserver.log", record_pid=self._record_pid
        )

    def _ready(self, started: float) -> None:
        self.start_seconds = time.monotonic() - started
        self._log(f"control plane ready at {self.url} in {self.start_seconds:.1f}s (pids {self.pids})")

    def _check_alive(self, what: str, log_path: Path) -> None:
        proc = self._etcd if what == "etcd" else self._apiserver
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise ControlPlaneError(
                f"{what} exited (code {code}); last log lines:\n{processes.tail(log_path)}"
            )

    def _timeout(self, what: str, log_path: Path) -> ControlPlaneError:
        return ControlPlaneError(
            f"{what} not ready after {self.ready_timeout:.0f}s; last log lines:\n{processes.tail(log_path)}"
        )

    def _wait(self, probe: Callable[[], bool], what: str, log_path: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            self._check_alive(what, log_path)
            if probe():
                return
            time.sleep(0.1)
        raise self._timeout(what, log_path)

    async def _await(self, probe: Callable[[], bool], what: str, log_path: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            self._check_alive(what, log_path)
            if await asyncio.to_thread(probe):
                return
            await asyncio.sleep(0.1)
        raise self._timeout(what, log_path)

    def _etcd_ready(self) -> bool:
        host, port = self.etcd_url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            return response.status == 200 and json.loads(response.read()).get("health") == "true"
        except (OSError, ValueError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _apiserver_ready(self) -> bool:
        try:
            status, _ = self._get("/readyz")
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        client = self.client_ca.issue_client(ADMIN_USER, ADMIN_GROUPS)
        # ssl wants files for the client cert; keep them in a private temp dir only while loading.
        with tempfile.TemporaryDirectory() as tmp:
            crt, key = client.write(Path(tmp), "client")
            context.load_cert_chain(crt, key)
        return context

    def _get(self, path: str) -> tuple[int, str]:
        if self._context is None:
            self._context = self._ssl_context()
        context = self._context
        conn = http.client.HTTPSConnection(self.host, self.port, context=context, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            with contextlib.suppress(OSError):
                conn.close()
