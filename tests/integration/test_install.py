"""`kubectl apply -k` of each overlay on a real apiserver, then the operator's identity is probed.

The apiserver's RBAC answers (`kubectl auth can-i --as=system:serviceaccount:...`) must agree with
what the rendered manifests state (tests/unit/shipping/rbac.py evaluates them), and a client holding
the operator's identity really can do what the controllers need and is refused the rest.

The install uses a thin wrapper kustomization that only changes the namespace (what a user does with
`kustomize edit set namespace`), so each test gets its own namespace. Cluster-scoped objects keep their
`k3s-deploy-*` names; the fixture removes them afterwards (CRDs stay: other tests share them).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from k3s_deploy.services.k3scluster.secrets import managed_labels
from unit.shipping.kustomize import OVERLAYS, cluster_scoped_names, operator_user
from unit.shipping.kustomize import install as install_overlay
from unit.shipping.rbac import Grant, can, grants_for

pytestmark = pytest.mark.integration

SA = "k3s-deploy-operator"
PEERING = "k3s-deploy"


@dataclass
class Install:
    overlay: str
    namespace: str
    docs: list[dict[str, Any]]
    grants: list[Grant]
    operator_kubeconfig: Path

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{SA}"


@pytest.fixture(scope="module", params=OVERLAYS)
def install(
    request: pytest.FixtureRequest,
    kubectl: Any,
    mint_kubeconfig: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    """One install per overlay, shared by the tests below, each in its own fresh namespace."""
    overlay: str = request.param
    namespace = f"k3sd-i-{secrets.token_hex(3)}"  # short: the user name must fit a certificate CN (64)
    kubectl("create", "namespace", namespace)
    docs = install_overlay(kubectl, overlay, namespace, tmp_path_factory.mktemp("install"))
    cluster_scoped = cluster_scoped_names(docs)
    user, groups = operator_user(namespace)
    operator = mint_kubeconfig(user, groups)
    try:
        yield Install(overlay, namespace, docs, grants_for(docs, namespace, SA), operator)
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", *cluster_scoped, check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


def can_i(kubectl: Any, install: Install, verb: str, resource: str, *, namespace: str | None) -> bool:
    """`kubectl auth can-i` as the operator's ServiceAccount (impersonated by the admin)."""
    args = ["auth", "can-i", verb, resource, f"--as={install.user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in {"yes", "no"}, (args, proc.stdout, proc.stderr)
    return answer == "yes"


# (verb, resource as kubectl spells it, api group, resource as RBAC spells it, resourceName)
QUESTIONS: list[tuple[str, str, str, str, str | None]] = [
    *[
        (v, "k3sclusters.k3sdeploy.io", "k3sdeploy.io", "k3sclusters", None)
        for v in ("get", "list", "watch", "patch", "create", "delete", "update")
    ],
    *[
        (v, "proxmoxvms.k3sdeploy.io", "k3sdeploy.io", "proxmoxvms", None)
        for v in ("get", "list", "watch", "patch", "create", "delete", "update")
    ],
    ("patch", "k3sclusters.k3sdeploy.io", "k3sdeploy.io", "k3sclusters/status", None),
    ("patch", "proxmoxvms.k3sdeploy.io", "k3sdeploy.io", "proxmoxvms/status", None),
    ("update", "k3sclusters.k3sdeploy.io", "k3sdeploy.io", "k3sclusters/finalizers", None),
    *[(v, "secrets", "", "secrets", None) for v in ("get", "list", "watch", "create", "patch", "delete")],
    ("create", "events", "", "events", None),
    ("delete", "events", "", "events", None),
    ("create", "pods", "", "pods", None),
    ("list", "namespaces", "", "namespaces", None),
    ("delete", "namespaces", "", "namespaces", None),
    (
        "list",
        "customresourcedefinitions.apiextensions.k8s.io",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        None,
    ),
    (
        "delete",
        "customresourcedefinitions.apiextensions.k8s.io",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        None,
    ),
    ("patch", f"clusterkopfpeerings.kopf.dev/{PEERING}", "kopf.dev", "clusterkopfpeerings", PEERING),
    ("patch", f"kopfpeerings.kopf.dev/{PEERING}", "kopf.dev", "kopfpeerings", PEERING),
    ("create", "clusterkopfpeerings.kopf.dev", "kopf.dev", "clusterkopfpeerings", None),
    ("create", "kopfpeerings.kopf.dev", "kopf.dev", "kopfpeerings", None),
    (
        "create",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        None,
    ),
]


def test_apiserver_agrees_with_the_rendered_rbac(kubeconfig: Path, install: Install) -> None:
    """Every question, asked as a SubjectAccessReview (what `auth can-i --as` asks), in three scopes."""
    authz = kubernetes.client.AuthorizationV1Api(kubernetes.config.new_client_from_config(str(kubeconfig)))
    for verb, _, group, rbac_resource, name in QUESTIONS:
        resource, _, sub = rbac_resource.partition("/")
        for ns in (install.namespace, "kube-system", None):
            review = kubernetes.client.V1SubjectAccessReview(
                spec=kubernetes.client.V1SubjectAccessReviewSpec(
                    user=install.user,
                    groups=["system:serviceaccounts", f"system:serviceaccounts:{install.namespace}"],
                    resource_attributes=kubernetes.client.V1ResourceAttributes(
                        verb=verb,
                        group=group,
                        resource=resource,
                        subresource=sub or None,
                        namespace=ns,
                        name=name,
                    ),
                )
            )
            allowed = bool(authz.create_subject_access_review(review).status.allowed)
            expected = can(install.grants, verb, rbac_resource, group=group, namespace=ns, name=name)
            assert allowed == expected, (install.overlay, verb, rbac_resource, ns, name, allowed)


def test_kubectl_auth_can_i_as_the_operator(kubectl: Any, install: Install) -> None:
    ns = install.namespace
    assert can_i(kubectl, install, "patch", "k3sclusters.k3sdeploy.io", namespace=ns)
    assert can_i(kubectl, install, "create", "proxmoxvms.k3sdeploy.io", namespace=ns)
    assert can_i(kubectl, install, "get", "secrets", namespace=ns)
    assert can_i(kubectl, install, "create", "events", namespace=ns)
    assert not can_i(kubectl, install, "list", "secrets", namespace=ns)
    assert not can_i(kubectl, install, "delete", "namespaces", namespace=None)
    assert not can_i(kubectl, install, "create", "k3sclusters.k3sdeploy.io", namespace=ns)
    assert not can_i(kubectl, install, "create", "pods", namespace=ns)
    cluster_wide = install.overlay == "cluster-wide"
    assert can_i(kubectl, install, "get", "secrets", namespace="kube-system") is cluster_wide
    assert can_i(kubectl, install, "list", "k3sclusters.k3sdeploy.io", namespace=None) is cluster_wide
    assert can_i(kubectl, install, "list", "namespaces", namespace=None) is not cluster_wide


def test_operator_identity_can_do_its_job_and_nothing_more(kubectl: Any, install: Install) -> None:
    ns = install.namespace
    as_operator = {"kubeconfig": install.operator_kubeconfig}

    def op(*args: str, input: str | None = None) -> Any:
        return kubectl(*args, input=input, check=False, **as_operator)

    # Secrets by name: write the kubeconfig Secret (labelled as the operator writes it: the Secrets
    # policy refuses anything else), read it back, update it, delete it.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "edge-kubeconfig", "namespace": ns, "labels": managed_labels("edge")},
        "stringData": {"value": "apiVersion: v1\nkind: Config\n"},
    }
    assert op("create", "-f", "-", input=json.dumps(secret)).returncode == 0
    assert op("get", "secret", "edge-kubeconfig", "-n", ns).returncode == 0
    patch = json.dumps({"stringData": {"value": "rotated"}})
    assert op("patch", "secret", "edge-kubeconfig", "-n", ns, "-p", patch).returncode == 0
    refused = op("get", "secrets", "-n", ns)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    assert op("delete", "secret", "edge-kubeconfig", "-n", ns).returncode == 0

    # The custom resources: the operator lists them but cannot create the user's clusters.
    assert op("get", "k3sclusters.k3sdeploy.io,proxmoxvms.k3sdeploy.io", "-n", ns).returncode == 0
    cluster = {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "K3sCluster",
        "metadata": {"name": "nope", "namespace": ns},
        "spec": {},
    }
    created = op("create", "-f", "-", input=json.dumps(cluster))
    assert created.returncode != 0 and "forbidden" in created.stderr.lower()

    # kopf's own needs: watch CRDs, keep its peering entry alive.
    assert op("get", "customresourcedefinitions", "-o", "name").returncode == 0
    # The peering object is not in the manifests: the operator creates it at start-up, as here.
    from k3s_deploy.adapters.peering import create_peering

    api_client = kubernetes.config.new_client_from_config(config_file=str(install.operator_kubeconfig))
    where = None if install.overlay == "cluster-wide" else ns
    asyncio.run(create_peering(PEERING, where, api_client=api_client))
    assert asyncio.run(create_peering(PEERING, where, api_client=api_client)) is False  # exists now
    # kopf PATCHes its peering entry without reading it first (kubectl patch would GET): do the same.
    api = kubernetes.client.CustomObjectsApi(api_client)
    entry = {"status": {"probe-peer": {"priority": 0, "lifetime": 60, "lastseen": "2026-01-01T00:00:00"}}}
    if install.overlay == "cluster-wide":
        api.patch_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING, entry)
    else:
        api.patch_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", PEERING, entry)
    with pytest.raises(kubernetes.client.ApiException) as denied:
        api.patch_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "someone-else", entry)
    assert denied.value.status == 403

    # Never: delete namespaces, touch RBAC, run pods.
    assert op("delete", "namespace", ns, "--dry-run=server").returncode != 0
    assert (
        op(
            "create", "clusterrolebinding", "x", "--clusterrole=cluster-admin", f"--user={install.user}"
        ).returncode
        != 0
    )
    assert op("run", "x", "--image=busybox", "-n", ns).returncode != 0

    other = "kube-system"
    other_secrets = op("get", "secret", "anything", "-n", other)
    if install.overlay == "single-namespace":
        assert "forbidden" in other_secrets.stderr.lower()
        assert op("get", "k3sclusters.k3sdeploy.io", "-A").returncode != 0
    else:
        assert "notfound" in other_secrets.stderr.lower().replace(" ", "")  # allowed by name, just absent
        assert op("get", "k3sclusters.k3sdeploy.io", "-A").returncode == 0


def test_install_created_what_the_operator_runs_with(kubectl: Any, install: Install) -> None:
    ns = install.namespace
    deployment = json.loads(
        kubectl("get", "deployment", "k3s-deploy-operator", "-n", ns, "-o", "json").stdout
    )
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == SA
    assert kubectl("get", "serviceaccount", SA, "-n", ns).returncode == 0
    for crd in (
        "k3sclusters.k3sdeploy.io",
        "proxmoxvms.k3sdeploy.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
