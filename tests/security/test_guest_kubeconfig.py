"""Item 1 (T1, root on a guest): the kubeconfig a guest writes is never loaded as it is.

The tenant points ``spec.k3s.installSource.script.url`` at an installer of their own. It installs a
``k3s`` that reports the wanted version and writes ``/etc/rancher/k3s/k3s.yaml`` whose user carries,
next to a valid client certificate, either an ``exec`` plugin (``touch <marker>``: a program run
inside the operator) or a ``tokenFile`` (standing in for the operator's ServiceAccount token: a file
the test controls holding a canary). A TLS listener at the node's ``<ip>:6443`` (what the guest could
run there) records every Authorization header it is sent.

The operator must run nothing, send no token, and store a kubeconfig built only from the CA, the
client certificate and key, and the server URL it chose.
"""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

import pytest
import yaml

from fixtures.pki import Pki, k3s_yaml

from .conftest import Lab
from .hostile_guest import K3S_VERSION, FakeApiServer, HostileInstaller, fake_k3s_binary, free_port, walk
from .hostile_guest import write_file as write_guest_file

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

FORBIDDEN_KEYS = {
    "exec",
    "auth-provider",
    "tokenFile",
    "token",
    "certificate-authority",
    "client-certificate",
    "client-key",
    "proxy-url",
    "insecure-skip-tls-verify",
}


def _node_ip(lab: Lab, name: str, timeout: float = 240.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (lab.get("k3sc", name) or {}).get("status") or {}
        ips = [n.get("ip") for n in status.get("nodes") or [] if n.get("ip")]
        if ips:
            return str(ips[0])
        time.sleep(0.5)
    raise AssertionError(f"{name}: no node address after {timeout}s: {lab.get('k3sc', name)}")


@pytest.mark.parametrize("attack", ["exec", "tokenFile"])
def test_guest_kubeconfig_cannot_run_code_or_steal_a_token(lab: Lab, tmp_path: Path, attack: str) -> None:
    name = f"kc-{attack.lower()}"
    marker = tmp_path / "exec-ran"
    canary = "canary-" + secrets.token_hex(16)
    token_file = tmp_path / "sa-token"
    token_file.write_text(canary)
    user = (
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "sh",
                "args": ["-c", f"touch {marker}"],
            }
        }
        if attack == "exec"
        else {"tokenFile": str(token_file)}
    )
    pki = Pki.create()
    decoy_port = free_port()
    script = (
        "set -eu\n"
        + fake_k3s_binary(f"echo 'k3s version {K3S_VERSION} (deadbeef)'")
        + write_guest_file(
            "/etc/rancher/k3s/k3s.yaml",
            k3s_yaml(pki, user_extra=user, server=f"https://127.0.0.1:{decoy_port}"),
        )
        + "echo '[INFO]  k3s installed'\n"
    )
    with HostileInstaller(script) as installer:
        manifest = lab.cluster(name, servers=1, agents=0)
        manifest["spec"]["k3s"]["installSource"] = {"script": {"url": installer.url}}
        lab.apply(manifest)
        ip = _node_ip(lab, name)
        (tmp_path / "api").mkdir()
        (tmp_path / "decoy").mkdir()
        node = f"{name}-server-0"
        with (
            FakeApiServer(ip, 6443, pki, tmp_path / "api", node) as api,
            FakeApiServer("127.0.0.1", decoy_port, pki, tmp_path / "decoy", node) as decoy,
        ):
            deadline = time.monotonic() + 240
            ready = None
            while time.monotonic() < deadline:
                ready = lab.condition(name, "Ready")
                stolen = [h for h in api.seen.authorization + decoy.seen.authorization if canary in h]
                if marker.exists() or stolen or (ready and ready["status"] == "True"):
                    break
                time.sleep(0.5)
            time.sleep(2)  # a request in flight, a second pass
            seen = api.seen.authorization + decoy.seen.authorization
            assert not marker.exists(), "the guest's exec plugin ran inside the operator"
            assert not any(canary in h for h in seen), (
                "the operator sent the token file's content to the guest"
            )
            assert not decoy.seen.paths, "the operator used the server URL the guest wrote"
            assert ready and ready["status"] == "True", (ready, lab.get("k3sc", name))
            assert api.seen.paths and not any(seen), (
                "the operator reached the API with its client certificate only"
            )
    secret = lab.get("secret", f"{name}-kubeconfig")
    assert secret, "the sanitised kubeconfig is stored"
    stored_text = base64.b64decode(secret["data"]["value"]).decode()
    stored = yaml.safe_load(stored_text)
    keys = {key for key, _ in walk(stored)}
    assert not keys & FORBIDDEN_KEYS, keys & FORBIDDEN_KEYS
    assert canary not in stored_text and str(tmp_path) not in stored_text
    assert stored["clusters"][0]["cluster"]["server"] == f"https://{ip}:6443"
    assert set(stored["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}
    assert lab.events(name, "KubeconfigFieldsDropped"), "the dropped fields are reported"
