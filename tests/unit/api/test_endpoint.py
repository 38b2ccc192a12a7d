"""The models refuse a bad endpoint or kube-vip setting with the message the apiserver gives."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from k3s_deploy.api.endpoint import KUBE_VIP_IMAGE, endpoint_host, endpoint_port
from k3s_deploy.api.k3scluster import K3sCluster
from unit.api.cases import Invalid, Valid
from unit.api.endpoint_cases import ENDPOINT_INVALID, ENDPOINT_VALID


@pytest.mark.parametrize("case", ENDPOINT_INVALID, ids=[c.id for c in ENDPOINT_INVALID])
def test_refused(case: Invalid) -> None:
    with pytest.raises(ValidationError) as exc:
        K3sCluster.model_validate(case.build())
    assert case.expected_model_message in str(exc.value)


@pytest.mark.parametrize("case", ENDPOINT_VALID, ids=[c.id for c in ENDPOINT_VALID])
def test_accepted(case: Valid) -> None:
    K3sCluster.model_validate(case.build())


def test_kube_vip_image_is_pinned_by_default() -> None:
    obj = ENDPOINT_VALID[2].build()
    cluster = K3sCluster.model_validate(obj)
    assert cluster.spec.kube_vip is not None
    assert cluster.spec.kube_vip.image == KUBE_VIP_IMAGE
    assert ":latest" not in KUBE_VIP_IMAGE and KUBE_VIP_IMAGE.rsplit(":", 1)[1].startswith("v")


@pytest.mark.parametrize(
    ("endpoint", "host", "port"),
    [("k3s.example.internal", "k3s.example.internal", 6443), ("10.0.0.5:443", "10.0.0.5", 443)],
)
def test_host_and_port(endpoint: str, host: str, port: int) -> None:
    assert (endpoint_host(endpoint), endpoint_port(endpoint)) == (host, port)
