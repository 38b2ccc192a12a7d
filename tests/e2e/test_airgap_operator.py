"""Air-gapped install with fetchFrom: Operator, end to end: the operator process downloads the installer
and binary, copies them over SSH, and the node itself never asks the download server for anything.

The mirror is an https server on 127.0.0.1 with a private CA, as an internal mirror would be: the
operator downloads from it because its admin said so (K3SD_FETCH_ALLOWED_HOSTS lists 127.0.0.1,
K3SD_FETCH_CA_FILE adds the CA), not because of anything in the lab.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from k3s_deploy.adapters.artefacts import USER_AGENT
from k3s_deploy_lab import sample_cluster
from k3s_deploy_lab.pvesim.tls import ensure_certs

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


class Mirror:
    """A download mirror on loopback: relays GETs to the lab's release server and logs who asked."""

    def __init__(self, upstream: str, tls_dir: Path) -> None:
        self.upstream = upstream
        self.hits: list[tuple[str, str]] = []  # (path, user agent)
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.hits.append((self.path, self.headers.get("User-Agent", "")))
                with urllib.request.urlopen(mirror.upstream + self.path, timeout=10) as resp:  # noqa: S310
                    body = resp.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.ca, cert, key = ensure_certs(tls_dir, "127.0.0.1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"

    def sha256(self, path: str) -> str:
        with urllib.request.urlopen(self.upstream + path, timeout=10) as resp:  # noqa: S310
            return hashlib.sha256(resp.read()).hexdigest()


@pytest.fixture
def mirror(lab: Lab) -> Iterator[Mirror]:
    upstream = str(lab.pve["k3sInstallUrl"]).removesuffix("/k3s/install.sh")
    m = Mirror(upstream, lab.dir / "mirror-tls")
    thread = threading.Thread(target=m.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield m
    finally:
        m.server.shutdown()
        m.server.server_close()


async def test_operator_fetched_airgap_install(lab: Lab, mirror: Mirror) -> None:
    version = sample_cluster.K3S_VERSION
    binary_path = f"/k3s/releases/download/{version}/k3s"
    # the operator's admin allows the mirror explicitly (and trusts its CA)
    lab.operator.env.update({"K3SD_FETCH_ALLOWED_HOSTS": "127.0.0.1", "K3SD_FETCH_CA_FILE": str(mirror.ca)})
    lab.operator.restart()
    cluster = lab.cluster("airop", servers=1, agents=0)
    cluster["spec"]["k3s"]["installSource"] = {
        "airGap": {
            "installerURL": f"{mirror.url}/k3s/install.sh",
            "binaryURL": f"{mirror.url}{binary_path}",
            "fetchFrom": "Operator",
            "installerSHA256": mirror.sha256("/k3s/install.sh"),
            "binarySHA256": mirror.sha256(binary_path),
        }
    }
    lab.apply(cluster)
    lab.wait_ready("airop", timeout=240)

    status = (lab.get("k3sc", "airop") or {})["status"]
    node = status["nodes"][0]
    assert status["readyServers"] == 1 and node["k3sVersion"] == version
    # the operator downloaded each artefact once; nobody else (no curl from the node) asked the mirror
    assert sorted(mirror.hits) == sorted([("/k3s/install.sh", USER_AGENT), (binary_path, USER_AGENT)])
    # With INSTALL_K3S_SKIP_DOWNLOAD the lab's installer refuses to run unless a k3s binary is already in
    # place, and takes its version from it: the operator's copy is what the node was installed from.
    # The staged installer is removed after the run.
    out = await lab.ssh(node["ip"], "ls -A /var/lib/rancher/k3s-deploy | wc -l; k3s --version")
    lines = out.splitlines()
    assert lines[0].strip() == "0"
    assert lines[1].startswith(f"k3s version {version} (")
    nodes = lab.target_kubectl(
        "airop", "get", "nodes", "-o", "jsonpath={.items[*].status.nodeInfo.kubeletVersion}"
    )
    assert nodes == version
