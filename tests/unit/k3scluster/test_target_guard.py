"""The target-cluster adapter refuses any kubeconfig beyond inline certificates (defence in depth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.pki import Pki, k3s_yaml
from k3s_deploy import errors
from k3s_deploy.adapters.target_cluster import KubernetesTargetCluster
from k3s_deploy.services.k3scluster.kubeconfig import sanitise

PKI = Pki.create()
SAFE = sanitise(k3s_yaml(PKI)).build(server="https://10.0.0.10:6443", name="demo")


def _with(section: str, field: str, value: Any) -> str:
    doc = yaml.safe_load(SAFE)
    doc[f"{section}s"][0][section][field] = value
    return str(yaml.safe_dump(doc))


def test_a_sanitised_kubeconfig_loads() -> None:
    client = KubernetesTargetCluster()._client(SAFE)
    assert client.configuration.host == "https://10.0.0.10:6443"
    assert client.configuration.verify_ssl


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("user", "tokenFile", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
        ("user", "token", "x"),
        ("user", "auth-provider", {"name": "oidc", "config": {}}),
        ("user", "client-key", "/etc/key"),
        ("user", "username", "admin"),
        ("cluster", "certificate-authority", "/etc/ca"),
        ("cluster", "proxy-url", "http://127.0.0.1:3128"),
        ("cluster", "insecure-skip-tls-verify", True),
    ],
)
def test_fields_outside_the_allow_list_are_refused(section: str, field: str, value: Any) -> None:
    with pytest.raises(errors.CredentialsError) as caught:
        KubernetesTargetCluster()._client(_with(section, field, value))
    assert caught.value.reason == "KubeconfigRejected" and field in caught.value.message


def test_an_exec_plugin_is_refused_before_it_can_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = _with(
        "user",
        "exec",
        {"apiVersion": "client.authentication.k8s.io/v1", "command": "touch", "args": [str(marker)]},
    )
    with pytest.raises(errors.CredentialsError, match="exec"):
        KubernetesTargetCluster()._client(text)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["clusters", "users"])
def test_more_than_one_cluster_or_user_is_refused(key: str) -> None:
    doc = yaml.safe_load(SAFE)
    doc[key].append(doc[key][0])
    with pytest.raises(errors.CredentialsError, match="exactly one"):
        KubernetesTargetCluster()._client(yaml.safe_dump(doc))


def test_plain_http_and_context_extras_are_refused() -> None:
    doc = yaml.safe_load(SAFE)
    doc["clusters"][0]["cluster"]["server"] = "http://10.0.0.10:6443"
    with pytest.raises(errors.CredentialsError, match="https"):
        KubernetesTargetCluster()._client(yaml.safe_dump(doc))
    doc = yaml.safe_load(SAFE)
    doc["contexts"][0]["context"]["extensions"] = [{"name": "x"}]
    with pytest.raises(errors.CredentialsError, match="context"):
        KubernetesTargetCluster()._client(yaml.safe_dump(doc))


async def test_a_node_list_the_client_cannot_read_is_the_guests_fault_not_the_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from k3s_deploy.adapters import target_cluster

    def malformed(*args: Any, **kwargs: Any) -> Any:  # a Node whose labels are not strings
        return {"items": [{"metadata": {"name": "n1", "labels": {"arch": 64}}}]}

    monkeypatch.setattr(target_cluster, "request", malformed)
    with pytest.raises(errors.GuestInputRejected) as caught:
        await KubernetesTargetCluster().nodes(SAFE)
    assert caught.value.reason == "GuestValueInvalid" and "Node list" in caught.value.message
