"""The tenant-namespaces overlay and the Secrets policy, rendered by a real kubectl.

The apiserver proof is tests/security/test_operator_secrets_policy.py; these catch a broken
manifest (an identity binding without its label, a tenant listed in one place only) before any
apiserver starts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_deploy.cli import run as run_command
from unit.shipping.kustomize import MANIFESTS, find_kubectl, render
from unit.shipping.rbac import can, grants_for
from unit.shipping.tenants import EXAMPLE_TENANTS, OPERATOR_NAMESPACE, OVERLAY, edit_copy, listed_namespaces

SA = "k3s-deploy-operator"
KUBECTL = find_kubectl()
ALL_OVERLAYS = ["cluster-wide", "single-namespace", "tenant-namespaces"]

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="no kubectl: run `k3s-deploy lab build`")

Docs = list[dict[str, Any]]


def args_of(docs: Docs) -> list[str]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def check_tenants(docs: Docs, operator_ns: str, tenants: list[str]) -> None:
    """Bound, peered and watched in exactly ``tenants``; no rights anywhere else."""
    params = run_command.make_context("run", args_of(docs)).params
    assert list(params["namespaces"]) == tenants and not params["all_namespaces"]
    where = sorted({d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"})
    assert where == sorted(tenants), where
    # No custom object in the install (one apply must work); the operator creates its KopfPeerings.
    assert not [d for d in docs if d["kind"] in {"KopfPeering", "ClusterKopfPeering"}]
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": operator_ns}]
    grants = grants_for(docs, operator_ns, SA)
    for ns in tenants:
        assert can(grants, "get", "secrets", namespace=ns) and can(grants, "create", "secrets", namespace=ns)
        assert can(grants, "watch", "k3sclusters", group="k3sdeploy.io", namespace=ns)
        assert can(grants, "patch", "kopfpeerings", group="kopf.dev", namespace=ns, name="k3s-deploy")
        assert can(grants, "create", "kopfpeerings", group="kopf.dev", namespace=ns)
    for ns in (operator_ns, "kube-system", "someone-else"):
        assert not can(grants, "get", "secrets", namespace=ns), ns
        assert not can(grants, "list", "k3sclusters", group="k3sdeploy.io", namespace=ns), ns
        assert not can(grants, "create", "kopfpeerings", group="kopf.dev", namespace=ns), ns
    assert not can(grants, "list", "k3sclusters", group="k3sdeploy.io")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == operator_ns


def test_the_shipped_example_lists_its_tenants_in_both_places() -> None:
    overlay = MANIFESTS / OVERLAY
    assert listed_namespaces(overlay) == list(EXAMPLE_TENANTS)
    check_tenants(render(KUBECTL or "", "tenant-namespaces"), OPERATOR_NAMESPACE, list(EXAMPLE_TENANTS))


def test_a_users_edit_moves_the_operator_and_the_tenants(tmp_path: Path) -> None:
    tenants = ["blue", "green", "red"]
    overlay = edit_copy(tmp_path, "platform", tenants)
    out = subprocess.run(
        [KUBECTL or "", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    check_tenants(docs, "platform", tenants)


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_overlay_ships_the_secrets_policy_keyed_to_its_service_account(overlay: str) -> None:
    docs = render(KUBECTL or "", overlay)
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    spec = policy["spec"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert spec["failurePolicy"] == "Fail"
    rules = spec["matchConstraints"]["resourceRules"]
    assert rules == [
        {
            "apiGroups": [""],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["secrets"],
        }
    ]
    # The parameter is the identity binding: exactly one, labelled, naming the operator's account.
    selector = binding["spec"]["paramRef"]["selector"]["matchLabels"]
    assert spec["paramKind"] == {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding"}
    identities = [
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding"
        and selector.items() <= (d["metadata"].get("labels") or {}).items()
    ]
    assert len(identities) == 1
    assert identities[0]["subjects"] == [
        {"kind": "ServiceAccount", "name": SA, "namespace": OPERATOR_NAMESPACE}
    ]
    assert "request.userInfo.username" in spec["matchConditions"][0]["expression"]
