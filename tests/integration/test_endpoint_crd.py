"""The real apiserver refuses a bad endpoint or kube-vip setting with the models' message."""

from __future__ import annotations

import json

import pytest

from fixtures.kube import Kubectl
from integration.test_crds import crds as crds  # the fixture: CRDs installed as generated
from unit.api.cases import Invalid, Valid
from unit.api.endpoint_cases import ENDPOINT_INVALID, ENDPOINT_VALID

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("case", ENDPOINT_INVALID, ids=[c.id for c in ENDPOINT_INVALID])
def test_refused(kubectl: Kubectl, crds: list[str], namespace: str, case: Invalid) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(case.build()), check=False)
    assert result.returncode != 0, f"{case.id} was accepted: {result.stdout}"
    assert case.api_message in result.stderr, result.stderr


@pytest.mark.parametrize("case", ENDPOINT_VALID, ids=[c.id for c in ENDPOINT_VALID])
def test_accepted(kubectl: Kubectl, crds: list[str], namespace: str, case: Valid) -> None:
    obj = case.build()
    obj["metadata"]["name"] = case.id
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode == 0, result.stderr
