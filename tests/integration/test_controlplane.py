"""The local control plane is a real Kubernetes API: TLS, RBAC, honest version, clean lifecycle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from fixtures.kube import Kubectl, MintKubeconfig
from k3s_deploy_lab.controlplane import ControlPlane
from k3s_deploy_lab.controlplane.build import cached_binaries, kubernetes_version
from k3s_deploy_lab.controlplane.certs import CertificateAuthority, write_kubeconfig
from k3s_deploy_lab.controlplane.external import ExternalCluster
from k3s_deploy_lab.controlplane.processes import free_port

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (catches anything the lab forgot to record)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k3s_deploy", "lab", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_lab_up_detached_then_down_leaves_no_process(
    tmp_path: Path, kubectl: Kubectl, local_control_plane: ControlPlane
) -> None:
    lab_dir = tmp_path / "lab"
    up = _lab("up", "--components", "controlplane", "--dir", str(lab_dir), "--detach")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        pids = [int(p) for p in (lab_dir / "pids").read_text().split()]
        supervisor = int((lab_dir / "supervisor.pid").read_text())
        assert len(pids) == 2 and all(_alive(p) for p in [*pids, supervisor])
        facts = json.loads((lab_dir / "facts.json").read_text())
        assert facts["kubeconfig"] == str(lab_dir / "kubeconfig")
        assert facts["controlplane"]["version"] == kubernetes_version()
        got = kubectl("get", "namespace", "kube-system", "-o", "name", kubeconfig=lab_dir / "kubeconfig")
        assert got.stdout.strip() == "namespace/kube-system"
        lab_kubectl = subprocess.run(
            [str(lab_dir / "bin" / "kubectl"), "--kubeconfig", str(lab_dir / "kubeconfig"), "get", "ns", "default"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert lab_kubectl.returncode == 0, lab_kubectl.stderr
        kubectl("create", "configmap", "hello", "--from-literal=a=b", kubeconfig=lab_dir / "kubeconfig")
    finally:
        down = _lab("down", "--dir", str(lab_dir))
    assert down.returncode == 0, down.stderr
    assert _eventually(lambda: not any(_alive(p) for p in [*pids, supervisor]), timeout=10)
    assert _processes_mentioning(str(lab_dir)) == []
    assert not (lab_dir / "kubeconfig").exists()


def test_lab_up_in_the_foreground_cleans_up_on_interrupt(
    tmp_path: Path, kubectl: Kubectl, local_control_plane: ControlPlane
) -> None:
    lab_dir = tmp_path / "lab"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k3s_deploy",
            "lab",
            "up",
            "--components",
            "controlplane",
            "--dir",
            str(lab_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _eventually(lambda: (lab_dir / "ready").exists() or proc.poll() is not None, timeout=120)
        assert proc.poll() is None
        pids = [int(p) for p in (lab_dir / "pids").read_text().split()]
        kubectl("get", "--raw", "/readyz", kubeconfig=lab_dir / "kubeconfig")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert not any(_alive(p) for p in pids)
    assert _processes_mentioning(str(lab_dir)) == []


def test_lab_uses_an_existing_cluster_given_by_kubeconfig(
    tmp_path: Path, kubeconfig: Path, control_plane: ControlPlane | ExternalCluster
) -> None:
    lab_dir = tmp_path / "lab"
    up = _lab(
        "up",
        "--components",
        "controlplane",
        "--dir",
        str(lab_dir),
        "--kubeconfig",
        str(kubeconfig),
        "--detach",
    )
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        facts = json.loads((lab_dir / "facts.json").read_text())
        assert facts["kubeconfig"] == str(kubeconfig)
        assert facts["controlplane"] == {"external": True, "version": control_plane.version()["gitVersion"]}
        assert not (lab_dir / "controlplane").exists()  # nothing built or started
        assert not (lab_dir / "pids").exists()
    finally:
        _lab("down", "--dir", str(lab_dir))


def test_lab_refuses_a_cluster_that_does_not_answer(
    tmp_path: Path, local_control_plane: ControlPlane
) -> None:
    dead = write_kubeconfig(
        tmp_path / "dead.kubeconfig",
        server=f"https://127.0.0.1:{free_port()}",
        ca_pem=local_control_plane.ca.cert_pem,
        client=local_control_plane.mint_client("nobody"),
        user="nobody",
    )
    up = _lab(
        "up",
        "--components",
        "controlplane",
        "--dir",
        str(tmp_path / "lab"),
        "--kubeconfig",
        str(dead),
        "--detach",
    )
    assert up.returncode == 1
    assert "does not answer" in (tmp_path / "lab" / "lab.log").read_text()


def test_minted_user_is_forbidden_until_a_rolebinding_allows_it(
    kubectl: Kubectl, namespace: str, mint_kubeconfig: MintKubeconfig
) -> None:
    alice = mint_kubeconfig("alice", ["developers"])
    denied = kubectl("get", "configmaps", "-n", namespace, kubeconfig=alice, check=False)
    assert denied.returncode != 0
    assert 'User "alice" cannot list resource "configmaps"' in denied.stderr
    assert "Forbidden" in denied.stderr

    kubectl("create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", namespace)
    kubectl("create", "rolebinding", "alice-reads", "--role=cm-reader", "--user=alice", "-n", namespace)
    assert _eventually(
        lambda: kubectl("get", "configmaps", "-n", namespace, kubeconfig=alice, check=False).returncode == 0
    )
    # Exactly what was granted: still no writes, and nothing in other namespaces.
    write = kubectl("create", "configmap", "x", "-n", namespace, kubeconfig=alice, check=False)
    assert 'User "alice" cannot create resource "configmaps"' in write.stderr
    other = kubectl("get", "configmaps", "-n", "default", kubeconfig=alice, check=False)
    assert 'User "alice" cannot list resource "configmaps"' in other.stderr


def test_certificate_groups_are_kubernetes_groups(
    kubectl: Kubectl, namespace: str, mint_kubeconfig: MintKubeconfig
) -> None:
    bob = mint_kubeconfig("bob", ["platform-team"])
    carol = mint_kubeconfig("carol", ["someone-else"])
    # Not the built-in `edit`: it is aggregated by the controller-manager, which does not run here.
    kubectl("create", "role", "secret-writer", "--verb=create", "--resource=secrets", "-n", namespace)
    kubectl("create", "rolebinding", "team", "--role=secret-writer", "--group=platform-team", "-n", namespace)
    assert _eventually(
        lambda: (
            kubectl(
                "auth", "can-i", "create", "secrets", "-n", namespace, kubeconfig=bob, check=False
            ).stdout.strip()
            == "yes"
        )
    )
    can = kubectl("auth", "can-i", "create", "secrets", "-n", namespace, kubeconfig=carol, check=False)
    assert can.stdout.strip() == "no"
    whoami = json.loads(kubectl("auth", "whoami", "-o", "json", kubeconfig=bob).stdout)
    assert whoami["status"]["userInfo"]["username"] == "bob"
    assert "platform-team" in whoami["status"]["userInfo"]["groups"]


def test_clients_verify_the_serving_certificate(
    tmp_path: Path, local_control_plane: ControlPlane, kubectl: Kubectl
) -> None:
    client = local_control_plane.mint_client("admin-ish", ["system:masters"])
    good = write_kubeconfig(
        tmp_path / "good",
        server=local_control_plane.url,
        ca_pem=local_control_plane.ca.cert_pem,
        client=client,
        user="a",
    )
    assert kubectl("get", "--raw", "/readyz", kubeconfig=good).stdout == "ok"
    wrong_ca = write_kubeconfig(
        tmp_path / "wrong",
        server=local_control_plane.url,
        ca_pem=CertificateAuthority.create("impostor").cert_pem,
        client=client,
        user="a",
    )
    refused = kubectl("get", "--raw", "/readyz", kubeconfig=wrong_ca, check=False)
    assert refused.returncode != 0
    assert "certificate signed by unknown authority" in refused.stderr
    # The admin kubeconfig the lab writes carries the CA inline: no insecure-skip anywhere.
    cluster = yaml.safe_load(local_control_plane.admin_kubeconfig.read_text())["clusters"][0]["cluster"]
    assert "insecure-skip-tls-verify" not in cluster
    assert cluster["certificate-authority-data"]


def test_client_certificates_from_another_ca_are_unauthorized(
    tmp_path: Path, local_control_plane: ControlPlane, kubectl: Kubectl
) -> None:
    forged = CertificateAuthority.create("forger").issue_client("mallory", ["system:masters"])
    config = write_kubeconfig(
        tmp_path / "forged",
        server=local_control_plane.url,
        ca_pem=local_control_plane.ca.cert_pem,
        client=forged,
        user="m",
    )
    refused = kubectl("get", "namespaces", kubeconfig=config, check=False)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stderr or "must be logged in" in refused.stderr


def test_version_is_the_built_release(local_control_plane: ControlPlane, kubectl: Kubectl) -> None:
    expected = kubernetes_version()
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == expected
    assert version["clientVersion"]["gitVersion"] == expected
    major, minor = expected.removeprefix("v").split(".")[:2]
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == (major, minor)
    assert local_control_plane.version()["gitVersion"] == expected


async def test_several_control_planes_with_own_host_port_and_ca(
    tmp_path: Path, kubectl: Kubectl, local_control_plane: ControlPlane
) -> None:
    """What a simulated K3s server needs: a chosen 127.x address, port 6443-style, its own CA, restarts."""
    ca = CertificateAuthority.create("k3s-server-ca")
    port = free_port("127.45.0.9")
    recorded: list[int] = []
    plane = ControlPlane(
        tmp_path / "k3s",
        host="127.45.0.9",
        port=port,
        sans=["k3s.lab.internal", "127.45.0.10"],
        ca=ca,
        record_pid=recorded.append,
        cluster_name="k3s-sim",
    )
    async with plane:
        assert plane.url == f"https://127.45.0.9:{port}"
        assert sorted(recorded) == sorted(plane.pids)
        serving = x509.load_pem_x509_certificate((plane.pki_dir / "apiserver.crt").read_bytes())
        assert serving.issuer == ca.cert.subject
        sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "k3s.lab.internal" in sans.get_values_for_type(x509.DNSName)
        assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {"127.45.0.9", "127.45.0.10"}
        kubectl("create", "configmap", "survives", "-n", "default", kubeconfig=plane.admin_kubeconfig)
        old_kubeconfig = plane.mint_kubeconfig("operator", ["system:masters"])
    assert not any(_alive(p) for p in recorded)

    # Restart on the same data dir: same CAs (old kubeconfigs still work), same data.
    async with ControlPlane(tmp_path / "k3s", host="127.45.0.9", port=port, ca=ca) as again:
        got = kubectl(
            "get", "configmap", "survives", "-n", "default", "-o", "name", kubeconfig=old_kubeconfig
        )
        assert got.stdout.strip() == "configmap/survives"
        assert again.client_ca.cert == plane.client_ca.cert


def test_control_plane_refuses_non_loopback_hosts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        ControlPlane(tmp_path, host="0.0.0.0")


def test_binaries_come_from_the_cache(local_control_plane: ControlPlane) -> None:
    built = cached_binaries()
    assert built is not None
    for name, path in built.items():
        assert path.name.startswith(f"{name}-v")
        info = json.loads(path.with_name(path.name + ".json").read_text())
        assert info["version"] in path.name
