"""The guest's kubeconfig goes through an allow-list (docs/security.md, item 1)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fixtures.pki import Pki, b64, k3s_yaml
from k3s_deploy import errors
from k3s_deploy.services.k3scluster.kubeconfig import GuestKubeconfig, sanitise, server_url

PKI = Pki.create()
GOOD = k3s_yaml(PKI)


def _doc(text: str = GOOD) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _rejected(doc: Any, *words: str) -> None:
    with pytest.raises(errors.GuestInputRejected) as caught:
        sanitise(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    assert caught.value.reason == "KubeconfigRejected"
    assert not caught.value.transient
    for word in words:
        assert word in caught.value.message


def test_build_points_at_the_operators_server_with_our_names() -> None:
    out = _doc(sanitise(GOOD).build(server="https://10.0.0.10:6443", name="demo"))
    assert out["clusters"] == [
        {
            "name": "demo",
            "cluster": {
                "server": "https://10.0.0.10:6443",
                "certificate-authority-data": b64(PKI.ca_pem),
            },
        }
    ]
    assert out["users"][0]["name"] == "demo"
    assert set(out["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}
    assert base64.b64decode(out["users"][0]["user"]["client-certificate-data"]) == PKI.client_cert_pem
    assert out["contexts"] == [{"name": "demo", "context": {"cluster": "demo", "user": "demo"}}]
    assert out["current-context"] == "demo"


def test_a_plain_k3s_kubeconfig_drops_nothing() -> None:
    assert sanitise(GOOD).dropped == ()


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        (
            "user",
            "exec",
            {"apiVersion": "client.authentication.k8s.io/v1", "command": "touch", "args": ["/x"]},
        ),
        ("user", "auth-provider", {"name": "oidc", "config": {"id-token": "x"}}),
        ("user", "tokenFile", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
        ("user", "token", "guest-chosen"),
        ("user", "username", "admin"),
        ("user", "password", "admin"),
        ("user", "client-certificate", "/etc/passwd"),
        ("user", "client-key", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
        ("cluster", "certificate-authority", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        ("cluster", "proxy-url", "http://127.0.0.1:3128"),
        ("cluster", "insecure-skip-tls-verify", True),
        ("cluster", "tls-server-name", "evil.example"),
    ],
)
def test_forbidden_fields_are_dropped_and_named(section: str, field: str, value: Any) -> None:
    doc = _doc()
    doc[f"{section}s"][0][section][field] = value
    allowed = sanitise(yaml.safe_dump(doc))
    assert allowed.dropped == (f"{section}.{field}",)
    built = allowed.build(server="https://10.0.0.10:6443", name="demo")
    assert str(value) not in built
    out = _doc(built)
    assert field not in out["clusters"][0]["cluster"] and field not in out["users"][0]["user"]
    assert set(out["clusters"][0]["cluster"]) == {"server", "certificate-authority-data"}
    assert set(out["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}


def test_guest_chosen_server_contexts_and_extra_top_level_keys_do_not_survive() -> None:
    doc = _doc(k3s_yaml(PKI, server="https://203.0.113.9:443"))
    doc["contexts"] = [
        {"name": "a", "context": {"cluster": "default", "user": "default", "namespace": "x"}},
        {"name": "b", "context": {"cluster": "other", "user": "other"}},
    ]
    doc["current-context"] = "b"
    doc["extensions"] = [{"name": "evil", "extension": {"x": 1}}]
    allowed = sanitise(yaml.safe_dump(doc))
    assert allowed.dropped == ("extensions",)
    out = _doc(allowed.build(server="https://10.0.0.10:6443", name="demo"))
    assert out["clusters"][0]["cluster"]["server"] == "https://10.0.0.10:6443"
    assert out["contexts"] == [{"name": "demo", "context": {"cluster": "demo", "user": "demo"}}]
    assert "extensions" not in out


def test_dropped_field_names_are_printable_and_bounded() -> None:
    doc = _doc()
    doc["users"][0]["user"]["evil\nname\x1b[31m" + "x" * 500] = 1
    (name,) = sanitise(yaml.safe_dump(doc)).dropped
    assert name.startswith("user.evil?name??31m") and len(name) <= 5 + 64


@pytest.mark.parametrize("key", ["clusters", "users"])
def test_extra_clusters_or_users_stall(key: str) -> None:
    doc = _doc()
    doc[key].append(doc[key][0])
    _rejected(doc, f"has 2 {key}", "exactly one")


@pytest.mark.parametrize("key", ["clusters", "users"])
def test_missing_clusters_or_users_stall(key: str) -> None:
    doc = _doc()
    del doc[key]
    _rejected(doc, f"no {key}")


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("cluster", "certificate-authority-data"),
        ("user", "client-certificate-data"),
        ("user", "client-key-data"),
    ],
)
def test_missing_certificate_data_stalls(section: str, field: str) -> None:
    doc = _doc()
    del doc[f"{section}s"][0][section][field]
    _rejected(doc, f"has no {field}")


def test_file_path_instead_of_data_stalls_naming_the_missing_data() -> None:
    doc = _doc()
    user = doc["users"][0]["user"]
    user["client-key"] = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    del user["client-key-data"]
    _rejected(doc, "has no client-key-data")


@pytest.mark.parametrize(
    ("section", "field", "value", "words"),
    [
        ("cluster", "certificate-authority-data", "not base64!", ("not base64",)),
        ("cluster", "certificate-authority-data", b64(b"just text"), ("not PEM certificates",)),
        (
            "user",
            "client-certificate-data",
            b64(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            ("not PEM",),
        ),
        (
            "user",
            "client-key-data",
            b64(b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"),
            ("not an unencrypted PEM private key",),
        ),
        ("user", "client-key-data", 42, ("has no client-key-data",)),
    ],
)
def test_bad_pem_stalls(section: str, field: str, value: Any, words: tuple[str, ...]) -> None:
    doc = _doc()
    doc[f"{section}s"][0][section][field] = value
    _rejected(doc, *words)


def test_a_key_of_another_certificate_stalls() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    doc = _doc()
    doc["users"][0]["user"]["client-key-data"] = b64(other)
    _rejected(doc, "does not belong to its client certificate")


def test_an_encrypted_key_stalls() -> None:
    key = serialization.load_pem_private_key(PKI.client_key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    doc = _doc()
    doc["users"][0]["user"]["client-key-data"] = b64(encrypted)
    _rejected(doc, "unencrypted")


def test_too_many_certificates_stall() -> None:
    doc = _doc()
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = b64(PKI.ca_pem * 9)
    _rejected(doc, "9 certificates")


def test_text_around_the_pem_blocks_is_not_carried_over() -> None:
    doc = _doc()
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = b64(
        b"exec: evil\n" + PKI.ca_pem + b"trailer"
    )
    allowed = sanitise(yaml.safe_dump(doc))
    assert allowed.ca_pem == PKI.ca_pem


@pytest.mark.parametrize("text", ["just: text", "- a\n- list", "{{not yaml", "", "clusters: 3\nusers: []"])
def test_garbage_stalls(text: str) -> None:
    _rejected(text, "kubeconfig K3s wrote")


def test_the_result_is_a_plain_value() -> None:
    allowed = sanitise(GOOD)
    assert isinstance(allowed, GuestKubeconfig)
    assert allowed.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_server_url_forms() -> None:
    assert server_url("10.0.0.1") == "https://10.0.0.1:6443"
    assert server_url("fd00::1") == "https://[fd00::1]:6443"
    assert server_url("k3s.example.com") == "https://k3s.example.com:6443"
    assert server_url("https://lb.example.com:443") == "https://lb.example.com:443"
