"""Pure parts of the proxmoxer adapter and the runner: error mapping, tags, values, kopf settings."""

from __future__ import annotations

import kopf
import pytest
import requests
from proxmoxer.core import AuthenticationError, ResourceException

from k3s_deploy.adapters.proxmox import encode_value, map_exception, split_tags
from k3s_deploy.errors import (
    CredentialsError,
    ProxmoxBusy,
    ProxmoxNotFound,
    ProxmoxPermissionDenied,
    ProxmoxRejected,
    ProxmoxUnavailable,
)
from k3s_deploy.runner import apply_kopf_settings
from k3s_deploy.services.proxmoxvm.credentials import parse_credentials
from k3s_deploy.settings import OperatorSettings


@pytest.mark.parametrize(
    ("code", "reason", "errors", "expected"),
    [
        (401, "Authentication failed!", None, CredentialsError),
        (403, "Permission check failed (/vms/100, VM.Allocate)", None, ProxmoxPermissionDenied),
        (400, "Parameter verification failed.", {"cores": "type check ('integer') failed"}, ProxmoxRejected),
        (400, "Parameter verification failed.", {"vmid": "VM 100 already exists"}, ProxmoxBusy),
        (500, "unable to create VM 105: config file already exists", None, ProxmoxBusy),
        (500, "VM is locked (clone)", None, ProxmoxBusy),
        (500, "checksum mismatch (file change by other user?)", None, ProxmoxBusy),
        (500, "Configuration file 'nodes/pve1/qemu-server/1.conf' does not exist", None, ProxmoxNotFound),
        (500, "can't clone VM to node 'pve2' (VM uses local storage)", None, ProxmoxRejected),
        (500, "SSH public key validation error", None, ProxmoxRejected),
        (500, "simulated failure", None, ProxmoxUnavailable),
        (503, "Service Unavailable", None, ProxmoxUnavailable),
        (595, "Connection refused", None, ProxmoxUnavailable),
        (501, "Method 'GET /x' not implemented", None, ProxmoxRejected),
    ],
)
def test_resource_errors_map_onto_the_error_tree(
    code: int, reason: str, errors: dict[str, str] | None, expected: type[Exception]
) -> None:
    mapped = map_exception(ResourceException(code, "x", reason, errors=errors), "call")
    assert type(mapped) is expected
    assert reason.split(" (")[0] in mapped.message


def test_transport_errors() -> None:
    tls = map_exception(requests.exceptions.SSLError("certificate verify failed"), "call")
    assert isinstance(tls, CredentialsError) and tls.reason == "TLSVerificationFailed"
    assert "caCert" in tls.message and "does not match" not in tls.message
    pinned = map_exception(requests.exceptions.SSLError("Fingerprints did not match. Expected ..."), "call")
    assert pinned.reason == "TLSVerificationFailed"
    assert "does not match the pinned SHA-256" in pinned.message and "caCert" not in pinned.message
    assert isinstance(map_exception(requests.exceptions.ConnectTimeout("t"), "call"), ProxmoxUnavailable)
    assert isinstance(map_exception(requests.exceptions.ConnectionError("reset"), "call"), ProxmoxUnavailable)
    assert isinstance(map_exception(AuthenticationError("no"), "call"), CredentialsError)


def test_values() -> None:
    assert split_tags("k3s-server;Prod, x") == {"k3s-server", "prod", "x"}
    assert split_tags(None) == frozenset()
    assert (encode_value(True), encode_value(False), encode_value(3)) == (1, 0, 3)


def test_credentials_parsing_names_the_problem_not_the_secret() -> None:
    good = parse_credentials(
        "pve", {"url": b"https://h:8006", "tokenId": b"a@pve!tok", "tokenSecret": b"supersecret"}
    )
    assert good.token_id == "a@pve!tok" and "supersecret" not in repr(good)
    pw = parse_credentials(
        "pve", {"url": b"https://h:8006", "username": b"root@pam", "password": b"hunter22"}
    )
    assert pw.username == "root@pam" and "hunter22" not in repr(pw)
    cases = [
        ({}, "'url'"),
        ({"url": b"http://h"}, "https://"),
        ({"url": b"https://h", "tokenId": b"a@pve!tok"}, "tokenSecret"),
        ({"url": b"https://h", "tokenId": b"nobang", "tokenSecret": b"supersecret"}, "user@realm!tokenname"),
        ({"url": b"https://h", "caCert": b"junk", "tokenId": b"a@pve!tok", "tokenSecret": b"s"}, "PEM"),
        ({"url": b"https://h", "password": b"supersecret"}, "username"),
    ]
    for data, hint in cases:
        with pytest.raises(CredentialsError) as err:
            parse_credentials("pve", data)
        assert hint in err.value.message and "supersecret" not in err.value.message


def test_kopf_settings_from_operator_settings() -> None:
    kopf_settings = kopf.OperatorSettings()
    ours = OperatorSettings(
        namespaces=["a"], standalone=True, watch_server_timeout=120, watch_client_timeout=150
    )
    apply_kopf_settings(kopf_settings, ours)
    assert kopf_settings.peering.standalone is True and kopf_settings.peering.clusterwide is False
    assert (kopf_settings.watching.server_timeout, kopf_settings.watching.client_timeout) == (120, 150)
    assert kopf_settings.persistence.finalizer == "k3sdeploy.io/finalizer"
    assert isinstance(kopf_settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert kopf_settings.posting.level >= 30
    clusterwide = kopf.OperatorSettings()
    apply_kopf_settings(clusterwide, OperatorSettings(namespaces=[], standalone=False))
    assert clusterwide.peering.clusterwide is True and clusterwide.peering.standalone is False
