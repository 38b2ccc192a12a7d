"""T2, a tenant, writes the Proxmox ``url`` of their credentials Secret: the operator connects there.

A private or loopback address is normal for Proxmox and stays allowed. Link-local and cloud metadata
addresses are refused before any connection, and whatever a server at ``url`` answers reaches status
only as a short quote.

No test connects anywhere but loopback: the connect function urllib3 uses is wrapped to record each
address asked for and to refuse everything that is not loopback.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from urllib3.util import connection

from k3s_deploy.adapters.proxmox import ProxmoxerClient
from k3s_deploy.errors import K3sDeployError
from k3s_deploy.ports.proxmox import ProxmoxCredentials
from k3s_deploy_lab.pvesim.tls import ensure_certs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a Proxmox connection is opened to; non-loopback ones are refused, not dialled."""
    seen: list[str] = []
    real = connection.create_connection

    def recording(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        seen.append(address[0])
        if not address[0].startswith("127."):
            raise OSError("test: only loopback may be dialled")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(connection, "create_connection", recording)
    return seen


def _client(url: str, **extra: Any) -> ProxmoxerClient:
    credentials = ProxmoxCredentials(url=url, token_id="k3s@pve!op", token_secret="s" * 36, **extra)
    return ProxmoxerClient(credentials, timeout=5.0, concurrency=1)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://169.254.169.254:8006", "MetadataAddressRefused"),
        ("https://metadata.google.internal", "MetadataAddressRefused"),
        ("https://[fd00:ec2::254]:8006", "MetadataAddressRefused"),
        ("https://169.254.10.1:8006", "LinkLocalAddressRefused"),
        ("https://[fe80::1]:8006", "LinkLocalAddressRefused"),
        ("https://[::ffff:169.254.169.254]:8006", "MetadataAddressRefused"),
        ("https://0.0.0.0:8006", "UnspecifiedAddressRefused"),
    ],
)
async def test_link_local_and_metadata_urls_are_never_dialled(
    url: str, reason: str, attempts: list[str]
) -> None:
    client = _client(url)
    with pytest.raises(K3sDeployError) as refused:
        await client.nodes()
    assert attempts == [], f"the operator dialled {attempts}"
    assert refused.value.reason == reason and not refused.value.transient


class Chatty:
    """A loopback https server answering every request with a huge error body."""

    def __init__(self, tmp: Path, status: int) -> None:
        self.ca, cert, key = ensure_certs(tmp, "127.0.0.1")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.status = status
        self.body = json.dumps({"errors": {"vmid": "A" * (1 << 20)}, "data": None}).encode()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head = f"HTTP/1.1 {self.status} {'B' * 4000}\r\nContent-Type: application/json\r\n"
                head += f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
                conn.sendall(head.encode() + self.body)
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self._sock.close()


@pytest.fixture(params=[500, 400, 401])
def chatty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chatty]:
    server = Chatty(tmp_path / "tls", request.param)
    yield server
    server.close()


async def test_a_server_at_url_reaches_status_only_as_a_short_quote(chatty: Chatty) -> None:
    client = _client(chatty.url, ca_cert=chatty.ca.read_text())
    with pytest.raises(K3sDeployError) as failed:
        await client.nodes()
    message = failed.value.message
    assert len(message) < 600, f"{len(message)} characters of the server's answer reached the message"
    assert "\n" not in message
