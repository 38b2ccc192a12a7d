"""Helpers for attacks by root on a guest (T1): a hostile K3s installer and a fake K3s API.

The tenant chooses ``spec.k3s.installSource.script.url``, so whatever script is served there runs as
root on every node. ``HostileInstaller`` serves such a script on loopback. ``FakeApiServer`` is what
a guest could run at ``<its address>:6443`` (in the lab, guests run no daemons of their own, so the
test runs it for them): a TLS endpoint that answers like a one-node K3s API and records every
``Authorization`` header it is sent.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from fixtures.pki import Pki

K3S_VERSION = "v1.31.4+k3s1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Served:
    """An HTTP server run in a thread for as long as the context is open."""

    _server: _Quiet

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class HostileInstaller(_Served):
    """Serves one shell script at ``url`` (loopback only) for as long as the context is open."""

    def __init__(self, script: str) -> None:
        body = script.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/install.sh"


def fake_k3s_binary(version_output: str) -> str:
    """Shell lines that install ``/usr/local/bin/k3s`` whose ``--version`` runs ``version_output``
    (a shell command line), as a compromised or home-made K3s build could."""
    return (
        "mkdir -p /usr/local/bin\n"
        "cat > /usr/local/bin/k3s <<'K3S_EOF'\n"
        "#!/bin/sh\n"
        f"{version_output}\n"
        "K3S_EOF\n"
        "chmod 0755 /usr/local/bin/k3s\n"
    )


def write_file(path: str, text: str) -> str:
    """Shell lines that write ``text`` to ``path`` on the guest (0600, parents created)."""
    return (
        f"mkdir -p {os.path.dirname(path)}\ncat > {path} <<'FILE_EOF'\n{text}\nFILE_EOF\nchmod 0600 {path}\n"
    )


# --- the fake K3s API ------------------------------------------------------------------------------


@dataclass
class Seen:
    """What reached the fake API: one entry per request."""

    authorization: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


class FakeApiServer(_Served):
    """HTTPS on ``(host, port)`` requiring a client certificate of ``pki``; lists one Ready node."""

    def __init__(self, host: str, port: int, pki: Pki, directory: Path, node: str) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{host} is not a loopback address")
        seen = self.seen = Seen()
        node_list = json.dumps(_node_list(node)).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.paths.append(self.path)
                seen.authorization.append(self.headers.get("Authorization") or "")
                found = self.path.split("?", 1)[0] == "/api/v1/nodes"
                body = node_list if found else b'{"kind":"Status","code":404}'
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PATCH = do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        cert, key = pki.server_files(directory, host)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(cadata=pki.ca_pem.decode())
        context.verify_mode = ssl.CERT_REQUIRED
        self._server = _Quiet((host, port), Handler)
        # the handshake happens in the request's thread, so a silent client cannot block accepting
        self._server.socket = context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )


def _node_list(node: str) -> dict[str, Any]:
    return {
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1"},
        "items": [
            {
                "metadata": {
                    "name": node,
                    "labels": {"node-role.kubernetes.io/control-plane": "true"},
                },
                "spec": {},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "nodeInfo": {
                        "architecture": "amd64",
                        "bootID": "0",
                        "containerRuntimeVersion": "containerd://1.7.23-k3s2",
                        "kernelVersion": "6.8.0",
                        "kubeProxyVersion": K3S_VERSION,
                        "kubeletVersion": K3S_VERSION,
                        "machineID": "0",
                        "operatingSystem": "linux",
                        "osImage": "Ubuntu 24.04 LTS",
                        "systemUUID": "0",
                    },
                },
            }
        ],
    }


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a decoded YAML/JSON document."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key), inner
            yield from walk(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from walk(inner)
