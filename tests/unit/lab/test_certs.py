"""The lab PKI: certificates must really verify (or really fail) in a TLS handshake."""

from __future__ import annotations

import base64
import ssl
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k3s_deploy_lab.controlplane.certs import (
    CertificateAuthority,
    KeyPair,
    service_account_key_pair,
    split_sans,
    write_kubeconfig,
)


def _server_context(tmp: Path, serving: KeyPair, client_ca: CertificateAuthority | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    crt, key = serving.write(tmp, "server")
    ctx.load_cert_chain(crt, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.cert_pem.decode())
    return ctx


def _client_context(tmp: Path, ca: CertificateAuthority, client: KeyPair | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # what newer Pythons enforce by default
    if client is not None:
        crt, key = client.write(tmp, "client")
        ctx.load_cert_chain(crt, key)
    return ctx


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A full TLS handshake in memory (no sockets); raises ssl.SSLError on any verification failure."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3 servers verify the client certificate after the handshake: exchange data.
            c.write(b"ping")
            s_in.write(c_out.read())
            assert s.read(4) == b"ping"
            return
    raise AssertionError("handshake did not finish")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test-ca")


def test_serving_cert_verifies_for_its_sans_only(ca: CertificateAuthority, tmp_path: Path) -> None:
    serving = ca.issue_serving(
        "kube-apiserver", ip_addresses=["127.0.0.1", "127.7.0.2"], dns_names=["localhost"]
    )
    server = _server_context(tmp_path, serving, None)
    for name in ("127.0.0.1", "127.7.0.2", "localhost"):
        _handshake(server, _client_context(tmp_path, ca), name)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, _client_context(tmp_path, ca), "127.0.0.3")


def test_serving_cert_fails_against_another_ca(ca: CertificateAuthority, tmp_path: Path) -> None:
    serving = ca.issue_serving("kube-apiserver", ip_addresses=["127.0.0.1"])
    other = CertificateAuthority.create("other-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_context(tmp_path, serving, None), _client_context(tmp_path, other), "127.0.0.1")


def test_client_cert_accepted_only_from_the_client_ca(ca: CertificateAuthority, tmp_path: Path) -> None:
    client_ca = CertificateAuthority.create("client-ca")
    server = _server_context(tmp_path, ca.issue_serving("s", ip_addresses=["127.0.0.1"]), client_ca)
    _handshake(server, _client_context(tmp_path, ca, client_ca.issue_client("alice", ["dev"])), "127.0.0.1")
    stranger = CertificateAuthority.create("stranger").issue_client("mallory", ["system:masters"])
    with pytest.raises(ssl.SSLError):
        _handshake(server, _client_context(tmp_path, ca, stranger), "127.0.0.1")


def test_client_subject_is_user_and_groups(ca: CertificateAuthority) -> None:
    cert = ca.issue_client(
        "system:serviceaccount:ops:k3s-deploy", ["team-a", "system:masters", "team-a"]
    ).cert
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "system:serviceaccount:ops:k3s-deploy"
    ]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "team-a",
        "system:masters",
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.issuer == ca.cert.subject


def test_serving_cert_needs_a_name(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="at least one"):
        ca.issue_serving("nothing")


def test_ca_round_trips_through_files(ca: CertificateAuthority, tmp_path: Path) -> None:
    _crt, key = ca.write(tmp_path, "ca")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(tmp_path, "ca")
    assert loaded.cert == ca.cert
    # A cert issued by the reloaded CA verifies against the original.
    serving = loaded.issue_serving("s", dns_names=["localhost"])
    _handshake(_server_context(tmp_path, serving, None), _client_context(tmp_path, ca), "localhost")


def test_service_account_key_pair_is_a_public_and_private_key() -> None:
    pair = service_account_key_pair()
    assert pair.cert_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert pair.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_kubeconfig_inlines_everything_and_is_private(ca: CertificateAuthority, tmp_path: Path) -> None:
    client = ca.issue_client("bob", ["ops"])
    path = write_kubeconfig(
        tmp_path / "kc",
        server="https://127.0.0.1:6443",
        ca_pem=ca.cert_pem,
        client=client,
        user="bob",
        namespace="work",
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = yaml.safe_load(path.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    assert context == {"cluster": "k3s-deploy-lab", "user": "bob", "namespace": "work"}
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    user = config["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == client.cert_pem
    assert base64.b64decode(user["client-key-data"]) == client.key_pem


def test_split_sans() -> None:
    assert split_sans(["127.0.0.1", "localhost", "::1", "k3s.lab"]) == (
        ["127.0.0.1", "::1"],
        ["localhost", "k3s.lab"],
    )
