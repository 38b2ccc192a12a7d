"""Item 8: Secret values bound for the guests are one line; a control character stalls the cluster
with a reason and a message naming the Secret and key, never the value."""

from __future__ import annotations

import pytest

from k3s_deploy.errors import CredentialsError
from k3s_deploy.services.k3scluster.secrets import managed_labels
from k3s_deploy.services.proxmoxvm.credentials import parse_credentials

from .test_reconcile import NS, World, cluster_body, cond

INJECTED = "joiner-token-1234\nK3S_DATASTORE_ENDPOINT=postgres://attacker"


async def _stalled_with(w: World, body: dict[str, object]) -> dict[str, str]:
    out = await w.pass_(body)
    stalled = cond(out, "Stalled")
    assert stalled["reason"] == "SecretInvalid", stalled
    assert out.error is not None and not out.error.transient
    assert any(e.type == "Warning" and e.reason == "SecretInvalid" for e in out.events)
    for line in INJECTED.splitlines():
        assert line not in stalled["message"] and all(line not in e.message for e in out.events)
    assert not any(h.scripts for h in w.ssh.hosts.values()), "nothing was installed with it"
    return stalled


async def test_user_token_with_a_newline_stalls_naming_secret_and_key() -> None:
    w, body = World(), cluster_body(1, 0)
    body["spec"]["k3s"]["tokenSecretRef"] = {"name": "mine", "key": "join"}  # type: ignore[index]
    w.objects.secrets[(NS, "mine")] = {"data": {"join": INJECTED.encode()}, "labels": {}, "owner": None}
    await w.pass_(body)
    w.boot()
    stalled = await _stalled_with(w, body)
    assert "'join'" in stalled["message"] and "'mine'" in stalled["message"]
    assert "spec.k3s.tokenSecretRef" in stalled["message"]


async def test_tampered_generated_token_stalls() -> None:
    w, body = World(), cluster_body(1, 0)
    # a tenant can edit the operator's <cluster>-token Secret in their namespace
    w.objects.secrets[(NS, "demo-token")] = {
        "data": {"token": INJECTED.encode()},
        "labels": managed_labels("demo"),
        "owner": None,
    }
    await w.pass_(body)
    w.boot()
    stalled = await _stalled_with(w, body)
    assert "'token'" in stalled["message"] and "'demo-token'" in stalled["message"]


@pytest.mark.parametrize("bad", ["\x00", "\t", "\r", "\x1b"])
async def test_any_control_character_inside_is_refused(bad: str) -> None:
    w, body = World(), cluster_body(1, 0)
    body["spec"]["k3s"]["tokenSecretRef"] = {"name": "mine", "key": "join"}  # type: ignore[index]
    w.objects.secrets[(NS, "mine")] = {"data": {"join": f"abc{bad}def".encode()}, "labels": {}, "owner": None}
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert cond(out, "Stalled")["reason"] == "SecretInvalid"


async def test_trailing_newline_of_a_from_file_secret_is_dropped_not_refused() -> None:
    w, body = World(), cluster_body(1, 0)
    body["spec"]["k3s"]["tokenSecretRef"] = {"name": "mine", "key": "join"}  # type: ignore[index]
    w.objects.secrets[(NS, "mine")] = {"data": {"join": b"joiner-token-1234\n"}, "labels": {}, "owner": None}
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert not [c for c in out.status["conditions"] if c["type"] == "Stalled"]
    script = w.ssh.hosts["10.0.0.10"].scripts[0]
    assert "export K3S_TOKEN=joiner-token-1234\n" in script


@pytest.mark.parametrize("key", ["url", "tokenId", "tokenSecret"])
def test_credentials_keys_refuse_control_characters(key: str) -> None:
    data = {"url": b"https://h:8006", "tokenId": b"a@pve!tok", "tokenSecret": b"supersecret-value"}
    data[key] = data[key][:4] + b"\r\nX-Injected: 1" + data[key][4:]
    with pytest.raises(CredentialsError) as err:
        parse_credentials("pve-creds", data)
    assert err.value.reason == "SecretInvalid"
    assert f"'{key}'" in err.value.message and "'pve-creds'" in err.value.message
    assert "supersecret" not in err.value.message and "X-Injected" not in err.value.message


def test_password_with_a_newline_is_refused_and_ca_cert_may_have_lines() -> None:
    base = {"url": b"https://h:8006", "username": b"root@pam"}
    with pytest.raises(CredentialsError, match="'password'"):
        parse_credentials("pve", {**base, "password": b"pass\nword"})
    cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert parse_credentials("pve", {**base, "password": b"password1", "caCert": cert}).ca_cert
