"""ExternalCluster (K3SD_TEST_KUBECONFIG / `lab up --kubeconfig`) against the real apiserver.

The local control plane runs no controller-manager, so no one signs CertificateSigningRequests.
This test plays that signer (approved CSRs for ``kubernetes.io/kube-apiserver-client`` get a
certificate from the client CA, written to the real ``/status`` subresource), which is exactly the
job kind's or k3s's controller-manager does.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from fixtures.kube import Kubectl
from k3s_deploy_lab.controlplane import ControlPlane
from k3s_deploy_lab.controlplane.build import cached_binaries, kubernetes_version
from k3s_deploy_lab.controlplane.external import ExternalCluster

pytestmark = pytest.mark.integration


def _sign(plane: ControlPlane, request_pem: bytes) -> bytes:
    csr = x509.load_pem_x509_csr(request_pem)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(plane.client_ca.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(plane.client_ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def csr_signer(local_control_plane: ControlPlane, kubectl: Kubectl) -> Iterator[list[str]]:
    """Sign approved client CSRs until the test ends; yields the names it signed."""
    signed: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.2):
            for item in json.loads(kubectl("get", "csr", "-o", "json").stdout)["items"]:
                approved = any(c["type"] == "Approved" for c in item.get("status", {}).get("conditions", []))
                if (
                    approved
                    and not item["status"].get("certificate")
                    and item["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client"
                ):
                    pem = _sign(local_control_plane, base64.b64decode(item["spec"]["request"]))
                    item["status"]["certificate"] = base64.b64encode(pem).decode()
                    name = item["metadata"]["name"]
                    path = f"/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/status"
                    kubectl("replace", "--raw", path, "-f", "-", input=json.dumps(item))
                    signed.append(name)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield signed
    stop.set()
    thread.join(timeout=5)


def test_external_cluster_mints_users_through_the_csr_api(
    tmp_path: Path, kubeconfig: Path, kubectl: Kubectl, csr_signer: list[str]
) -> None:
    built = cached_binaries()
    assert built is not None
    cluster = ExternalCluster(kubeconfig, kubectl=built["kubectl"], data_dir=tmp_path)
    assert cluster.url.startswith("https://127.")
    assert cluster.version()["gitVersion"] == kubernetes_version()

    dave = cluster.mint_kubeconfig("dave", ["auditors", "readers"])
    assert len(csr_signer) == 1
    whoami = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=dave).stdout)["status"]["userInfo"]
    assert whoami["username"] == "dave"
    assert {"auditors", "readers"} <= set(whoami["groups"])
    # The CSR is cleaned up once the certificate is fetched.
    assert csr_signer[0] not in kubectl("get", "csr", "-o", "name").stdout


def test_external_cluster_without_a_signer_times_out_cleanly(
    tmp_path: Path, kubeconfig: Path, kubectl: Kubectl
) -> None:
    built = cached_binaries()
    assert built is not None
    cluster = ExternalCluster(kubeconfig, kubectl=built["kubectl"], data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="did not sign"):
        cluster.mint_client("erin", timeout=1.0)
    assert "k3s-deploy-test-erin" not in kubectl("get", "csr", "-o", "name").stdout
