"""A cluster the user already runs (kind, k3d, a real one), with the same surface as ControlPlane.

Tests and the lab want two things from any cluster: an admin kubeconfig and kubeconfigs for chosen
users/groups (to prove RBAC). Without the client CA's key, those are minted the way Kubernetes
itself offers: a CertificateSigningRequest for the ``kubernetes.io/kube-apiserver-client`` signer,
approved with the admin's rights and signed by the cluster's controller-manager.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k3s_deploy_lab.controlplane.certs import KeyPair, write_kubeconfig


class ExternalCluster:
    """An existing cluster reached through ``kubeconfig`` (used as the admin)."""

    def __init__(self, kubeconfig: Path, *, kubectl: Path, data_dir: Path) -> None:
        self.admin_kubeconfig = Path(kubeconfig).resolve()
        self.kubectl = kubectl
        self.data_dir = Path(data_dir)
        cluster = self._current_cluster()
        self.url: str = cluster["server"]
        self.ca_pem = self._ca_pem(cluster)

    def _run(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.admin_kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
        return proc.stdout

    def _current_cluster(self) -> dict[str, Any]:
        config = json.loads(self._run("config", "view", "--raw", "--minify", "-o", "json"))
        cluster: dict[str, Any] = config["clusters"][0]["cluster"]
        return cluster

    def _ca_pem(self, cluster: dict[str, Any]) -> bytes:
        if "certificate-authority-data" in cluster:
            return base64.b64decode(cluster["certificate-authority-data"])
        if "certificate-authority" in cluster:
            path = Path(cluster["certificate-authority"])
            return (path if path.is_absolute() else self.admin_kubeconfig.parent / path).read_bytes()
        raise RuntimeError(
            f"{self.admin_kubeconfig} names no CA for {cluster.get('server')}; TLS would not verify"
        )

    def version(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._run("get", "--raw", "/version"))
        return result

    def mint_client(self, user: str, groups: Iterable[str] = (), *, timeout: float = 60.0) -> KeyPair:
        """Have the cluster sign a client certificate for ``user`` in ``groups`` (CSR, approve, fetch)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in dict.fromkeys(groups)]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name(subject))
            .sign(key, hashes.SHA256())
        )
        name = f"k3s-deploy-test-{re.sub(r'[^a-z0-9-]+', '-', user.lower())[:40]}-{secrets.token_hex(4)}"
        request = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "usages": ["client auth"],
                "expirationSeconds": 86400,
            },
        }
        self._run("create", "-f", "-", input=json.dumps(request))
        try:
            self._run("certificate", "approve", name)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                issued = self._run("get", "csr", name, "-o", "jsonpath={.status.certificate}").strip()
                if issued:
                    key_pem = key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                    return KeyPair(base64.b64decode(issued), key_pem)
                time.sleep(0.5)
            raise RuntimeError(
                f"the cluster did not sign CSR {name} within {timeout:.0f}s (no signer running?)"
            )
        finally:
            subprocess.run(
                [
                    str(self.kubectl),
                    "--kubeconfig",
                    str(self.admin_kubeconfig),
                    "delete",
                    "csr",
                    name,
                    "--ignore-not-found",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )

    def mint_kubeconfig(
        self, user: str, groups: Iterable[str] = (), *, path: Path | None = None, namespace: str | None = None
    ) -> Path:
        groups = tuple(groups)
        if path is None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join((user, *groups)))[:100]
            path = self.data_dir / "kubeconfigs" / f"{slug}.kubeconfig"
        return write_kubeconfig(
            path,
            server=self.url,
            ca_pem=self.ca_pem,
            client=self.mint_client(user, groups),
            user=user,
            cluster_name="external",
            namespace=namespace,
        )
