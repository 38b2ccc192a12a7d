"""The real apiserver refuses, with a message that says why, a change to a K3s setting that cannot be
applied in place (CEL transition rule on spec.k3s), and accepts changes that roll out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fixtures.kube import Kubectl
from integration.test_crds import crds  # noqa: F401 - the fixture that installs the generated CRDs
from unit.api.cases import sample

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _cluster(server_args: list[str]) -> dict[str, Any]:
    obj = sample("k3scluster-single-server.yaml")
    obj["metadata"]["name"] = "fixed"
    obj["spec"]["k3s"]["serverArgs"] = server_args
    return obj


def _apply(kubectl: Kubectl, namespace: str, obj: dict[str, Any]) -> Any:
    return kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (["--cluster-cidr=10.42.0.0/16"], ["--cluster-cidr=10.50.0.0/16"]),
        (["--disable=traefik"], ["--disable=traefik", "--service-cidr=10.60.0.0/16"]),
        (["--flannel-backend=vxlan"], []),
        (["--cluster-dns=10.43.0.10"], ["--cluster-dns=10.43.0.53"]),
        ([], ["--datastore-endpoint=postgres://db.example:5432/k3s"]),
    ],
    ids=["cluster-cidr-changed", "service-cidr-added", "flannel-backend-removed", "cluster-dns", "datastore"],
)
def test_a_setting_fixed_at_creation_cannot_change(
    kubectl: Kubectl,
    crds: list[str],  # noqa: F811
    namespace: str,
    before: list[str],
    after: list[str],
) -> None:
    created = _apply(kubectl, namespace, _cluster(before))
    assert created.returncode == 0, created.stderr
    refused = _apply(kubectl, namespace, _cluster(after))
    assert refused.returncode != 0, f"{after} was accepted"
    assert "cannot change after the cluster is created" in refused.stderr, refused.stderr
    assert "create a new cluster" in refused.stderr
    stored = json.loads(kubectl("get", "k3sc", "fixed", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["k3s"].get("serverArgs", []) == before


def test_settings_that_roll_out_may_change_and_fixed_ones_may_stay(
    kubectl: Kubectl,
    crds: list[str],  # noqa: F811
    namespace: str,
) -> None:
    assert _apply(kubectl, namespace, _cluster(["--cluster-cidr=10.42.0.0/16"])).returncode == 0
    changed = _cluster(["--cluster-cidr=10.42.0.0/16", "--disable=traefik", "--kubelet-arg=max-pods=50"])
    changed["spec"]["k3s"]["registries"] = {
        "mirrors": [{"registry": "docker.io", "endpoints": ["https://m.example"]}]
    }
    result = _apply(kubectl, namespace, changed)
    assert result.returncode == 0, result.stderr


def test_a_fixed_flag_must_be_one_item(
    kubectl: Kubectl,
    crds: list[str],  # noqa: F811
    namespace: str,
) -> None:
    result = _apply(kubectl, namespace, _cluster(["--cluster-cidr", "10.42.0.0/16"]))
    assert result.returncode != 0
    assert "as one item --flag=value" in result.stderr, result.stderr
