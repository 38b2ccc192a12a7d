"""Item 8: strings that reach a guest carry no control characters; the real apiserver refuses them.

Before the fix the apiserver stored a K3sCluster whose serverArgs held a newline (written into the
install script and the K3s service's env file on the guest), an installer URL ending in a carriage
return, and an SSH key comment with a carriage return.
"""

from __future__ import annotations

import json

import pytest

from fixtures.kube import Kubectl
from unit.api.test_guest_strings import HOSTILE, Hostile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PLURALS = {"K3sCluster": "k3sclusters.k3sdeploy.io", "ProxmoxVM": "proxmoxvms.k3sdeploy.io"}


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_apiserver_refuses_control_characters_with_a_readable_message(
    kubectl: Kubectl, crds: str, namespace: str, case: Hostile
) -> None:
    obj = case.build(name=f"hostile-{case.id.lower()}")
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, f"{case.id} was accepted: {result.stdout}"
    assert "is invalid" in result.stderr and case.message in result.stderr, result.stderr
    found = kubectl("get", PLURALS[obj["kind"]], obj["metadata"]["name"], "-n", namespace, check=False)
    assert found.returncode != 0 and "NotFound" in found.stderr
