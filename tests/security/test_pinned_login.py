"""T3, a network attacker between the operator and Proxmox, against a pinned certificate fingerprint.

The credentials pin the simulator's real certificate and log in with username and password. An
attacker's listener sits in front of the simulator: it relays connections to the simulator byte for byte
(it cannot read those) until it decides to terminate TLS itself with a certificate of its own, and then
records every byte it decrypts. The password and the ticket must never reach it: on a pinned session
the client refuses the attacker's certificate right after the handshake, before it sends a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from k3s_deploy.adapters.proxmox import ProxmoxerClient
from k3s_deploy.errors import CredentialsError, K3sDeployError
from k3s_deploy.ports.proxmox import ProxmoxCredentials
from k3s_deploy_lab.pvesim.tls import ensure_certs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Interceptor:
    """A loopback listener in front of the simulator: relays, or (once ``intercept()``) terminates TLS
    with its own certificate and keeps what it decrypts in ``plaintext``."""

    def __init__(self, upstream: tuple[str, int], cert: Path, key: Path, *, relay: int | None) -> None:
        """``relay``: how many connections to relay before intercepting every later one; None relays
        until :meth:`intercept`."""
        self.upstream = upstream
        self.relay = relay
        self.intercepting = relay == 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.plaintext = bytearray()
        self.accepted = 0
        self.intercepted = 0
        self.handshakes = 0
        self.handshaken = threading.Event()
        self._relayed: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def intercept(self) -> None:
        """From now on terminate TLS; drop the relayed connections so the client must connect again."""
        with self._lock:
            self.intercepting = True
            relayed, self._relayed = self._relayed, []
        for sock in relayed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        self.intercept()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self.relay is not None and self.accepted > self.relay:
                    self.intercepting = True
                intercepting = self.intercepting
                if not intercepting:
                    self._relayed.append(conn)
            target = self._terminate if intercepting else self._relay
            threading.Thread(target=target, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(self.upstream) as up:
            while True:
                readable, _, _ = select.select([conn, up], [], [], 30)
                if not readable:
                    return
                for src in readable:
                    dst = up if src is conn else conn
                    try:
                        data = src.recv(65536)
                        if not data:
                            return
                        dst.sendall(data)
                    except OSError:
                        return

    def _terminate(self, conn: socket.socket) -> None:
        with self._lock:
            self.intercepted += 1
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                with self._lock:
                    self.handshakes += 1
                self.handshaken.set()
                while data := tls.recv(65536):
                    with self._lock:
                        self.plaintext += data
                    if b"\r\n\r\n" in self.plaintext:
                        body = b'{"data":null}'
                        tls.sendall(
                            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                        )
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


def _upstream(sim: Any) -> tuple[str, int]:
    host, port = sim.host.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def attacker_cert(tmp_path: Path) -> tuple[Path, Path]:
    _ca, cert, key = ensure_certs(tmp_path / "attacker", "127.0.0.1")
    return cert, key


def _password_client(sim: Any, url: str) -> ProxmoxerClient:
    credentials = ProxmoxCredentials(
        url=url, username=sim.username, password=sim.password, fingerprint=sim.info["fingerprint"]
    )
    return ProxmoxerClient(credentials, timeout=10.0, concurrency=2)


def _leaked(plaintext: bytes, secret: str) -> bool:
    return secret.encode() in plaintext or quote(secret, safe="").encode() in plaintext


@pytest.mark.parametrize("relay_first", [True, False], ids=["relay-first-connection", "intercept-all"])
async def test_password_never_reaches_a_listener_with_another_certificate(
    pve_sim: Any, attacker_cert: tuple[Path, Path], relay_first: bool
) -> None:
    """The attacker relays the first connection (so a one-off pin check passes) and intercepts the rest,
    or intercepts from the start. Either way the password never reaches it."""
    mitm = Interceptor(_upstream(pve_sim), *attacker_cert, relay=1 if relay_first else 0)
    client = _password_client(pve_sim, mitm.url)
    error: K3sDeployError | None = None
    try:
        try:
            await client.nodes()
            await client.cluster_vms()
        except K3sDeployError as exc:
            error = exc
        assert mitm.accepted >= 1
        password_leaked = _leaked(bytes(mitm.plaintext), pve_sim.password)
        assert not password_leaked, "the password reached the attacker"
        assert mitm.plaintext == b"", "a request reached the attacker"
        if not relay_first:
            # the client completed a TLS handshake with the attacker, then refused its certificate (the
            # attacker's thread counts its side of the handshake a moment after the client has moved on)
            await asyncio.to_thread(mitm.handshaken.wait, 5)
            assert mitm.handshakes >= 1
            assert error is not None and error.reason == "TLSVerificationFailed"
    finally:
        client.close()
        mitm.close()


async def test_ticket_renewal_goes_through_the_pinned_session(
    pve_sim: Any, attacker_cert: tuple[Path, Path]
) -> None:
    """After a good login the attacker starts intercepting; the next ticket renewal refuses its
    certificate, so neither the ticket nor the password reaches it."""
    mitm = Interceptor(_upstream(pve_sim), *attacker_cert, relay=None)
    client = _password_client(pve_sim, mitm.url)
    try:
        assert await client.nodes()  # logged in through the relay: the simulator's real certificate
        session = client._api._store["session"]
        ticket = session.auth.pve_auth_ticket
        assert ticket
        mitm.intercept()
        session.auth.birth_time -= 2 * 3600  # the ticket is due for renewal (proxmoxer renews after 1 h)
        with pytest.raises(CredentialsError) as refused:
            await client.nodes()
        assert mitm.intercepted >= 1
        plaintext = bytes(mitm.plaintext)
        ticket_leaked = _leaked(plaintext, ticket)
        password_leaked = _leaked(plaintext, pve_sim.password)
        assert not ticket_leaked, "the ticket reached the attacker"
        assert not password_leaked, "the password reached the attacker"
        assert plaintext == b"", "a request reached the attacker"
        assert refused.value.reason == "TLSVerificationFailed"
    finally:
        client.close()
        mitm.close()


class CountingProxy:
    """An HTTP(S) proxy that only counts who connects to it (and answers nothing useful)."""

    def __init__(self) -> None:
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn, contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._listener.close()


async def test_pinned_session_ignores_proxies_from_the_environment(
    pve_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = CountingProxy()
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = _password_client(pve_sim, pve_sim.url)
    try:
        assert await client.nodes()
        assert proxy.connections == 0
    finally:
        client.close()
        proxy.close()
