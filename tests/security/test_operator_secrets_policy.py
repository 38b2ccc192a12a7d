"""Item 2 of docs/security.md: the operator's ServiceAccount is not cluster-admin in disguise.

RBAC grants Secrets create/patch/delete wherever the operator is bound (in every namespace with the
cluster-wide overlay). On its own that lets the account mint a `kubernetes.io/service-account-token`
Secret for a privileged ServiceAccount and read the token back. Each overlay is installed on the real
apiserver and the attack is made as the operator's ServiceAccount (impersonated by the admin, and
with a certificate for its identity for the operator's own code). The ValidatingAdmissionPolicy in
manifests/base must refuse it, and everything else that is not an Opaque Secret labelled as
k3s-deploy's, while the operator's real Secret writes still pass. No controller-manager runs here, so
an accepted token Secret would stay empty: the accepted create is the breach.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest

from k3s_deploy.adapters.kube_children import KubeClusterObjects
from k3s_deploy.services.k3scluster.secrets import kubeconfig_secret_name, managed_labels
from unit.shipping.kustomize import SERVICE_ACCOUNT, cluster_scoped_names, install, operator_user
from unit.shipping.tenants import install_tenants

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

OVERLAYS = ["cluster-wide", "single-namespace", "tenant-namespaces"]
PRIVILEGED = "ci-deployer"  # a ServiceAccount bound to cluster-admin: what an attacker wants a token for


@dataclass
class Installed:
    overlay: str
    namespace: str  # where the operator runs
    writable: list[str]  # namespaces where RBAC lets it write Secrets
    outside: list[str]  # namespaces where it has no rights at all
    docs: list[dict[str, Any]] = field(repr=False)

    @property
    def user(self) -> str:
        return operator_user(self.namespace)[0]

    @property
    def target(self) -> str:
        """Where the attack is made: kube-system when the operator can write there."""
        return "kube-system" if "kube-system" in self.writable else self.writable[0]


@pytest.fixture(scope="module", params=OVERLAYS)
def installed(
    request: pytest.FixtureRequest, kubectl: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    overlay: str = request.param
    suffix = secrets.token_hex(3)
    namespace = f"k3sd-p-{suffix}"  # short: the user name must fit a certificate CN
    created = [namespace]
    workdir = tmp_path_factory.mktemp("install")
    if overlay == "tenant-namespaces":
        tenants = [f"tenant-a-{suffix}", f"tenant-b-{suffix}"]
        created += tenants
        for ns in created:
            kubectl("create", "namespace", ns)
        docs = install_tenants(kubectl, namespace, tenants, workdir)
        it = Installed(overlay, namespace, tenants, [namespace, "kube-system"], docs)
    else:
        kubectl("create", "namespace", namespace)
        docs = install(kubectl, overlay, namespace, workdir)
        if overlay == "cluster-wide":
            it = Installed(overlay, namespace, [namespace, "kube-system"], [], docs)
        else:
            it = Installed(overlay, namespace, [namespace], ["kube-system"], docs)
    policy_in_force(kubectl, it)
    kubectl("create", "serviceaccount", PRIVILEGED, "-n", it.target)
    admin_binding = f"{PRIVILEGED}-{suffix}"
    kubectl(
        "create",
        "clusterrolebinding",
        admin_binding,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={it.target}:{PRIVILEGED}",
    )
    try:
        yield it
    finally:
        kubectl("delete", "clusterrolebinding", admin_binding, "--ignore-not-found", check=False)
        kubectl("delete", "serviceaccount", PRIVILEGED, "-n", it.target, "--ignore-not-found", check=False)
        kubectl("delete", "--ignore-not-found", "--wait=false", *cluster_scoped_names(docs), check=False)
        for ns in created:
            kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def policy_in_force(kubectl: Any, it: Installed, timeout: float = 30.0) -> None:
    """The apiserver loads a new policy (and its parameter's informer) within seconds: wait for it."""
    probe = secret("probe", it.writable[0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = as_operator(kubectl, it, "create", "--dry-run=server", "-f", "-", input=probe)
        if REFUSED_BY_POLICY in proc.stderr:
            return
        time.sleep(0.5)
    raise AssertionError(f"the Secrets policy is not in force after {timeout}s: {proc.stdout}{proc.stderr}")


def as_operator(kubectl: Any, it: Installed, *args: str, input: str | None = None) -> Any:
    """kubectl impersonating the operator's ServiceAccount (user and groups, as its token has)."""
    user, groups = operator_user(it.namespace)
    who = [f"--as={user}", *(f"--as-group={g}" for g in groups)]
    return kubectl(*who, *args, input=input, check=False)


def secret(
    name: str,
    namespace: str,
    *,
    type_: str = "Opaque",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": type_,
            "metadata": meta,
            "stringData": {"value": "x"} if type_ != TOKEN_TYPE else {},
        }
    )


TOKEN_TYPE = "kubernetes.io/service-account-token"
MANAGED = {"app.kubernetes.io/managed-by": "k3s-deploy"}
REFUSED_BY_POLICY = "ValidatingAdmissionPolicy 'k3s-deploy-operator-secrets'"


def refused(proc: Any, *why: str) -> None:
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    message = proc.stderr
    assert REFUSED_BY_POLICY in message, message
    for part in why:
        assert part in message, message


def test_operator_cannot_mint_a_service_account_token(kubectl: Any, installed: Installed) -> None:
    it = installed
    for labels in (None, MANAGED):  # the label alone does not make a token Secret acceptable
        name = f"stolen-{secrets.token_hex(2)}"
        attack = secret(
            name,
            it.target,
            type_=TOKEN_TYPE,
            labels=labels,
            annotations={"kubernetes.io/service-account.name": PRIVILEGED},
        )
        proc = as_operator(kubectl, it, "create", "-f", "-", input=attack)
        refused(proc, "may only write Secrets of type Opaque, not kubernetes.io/service-account-token")
        assert kubectl("get", "secret", name, "-n", it.target, check=False).returncode != 0
    # Nor through the TokenRequest API, nor by making itself a ServiceAccount to bind.
    for verb, resource in (("create", "serviceaccounts/token"), ("create", "serviceaccounts")):
        can = as_operator(kubectl, it, "auth", "can-i", verb, resource, "-n", it.target)
        assert can.stdout.strip() == "no", (verb, resource, can.stdout, can.stderr)


def test_operator_writes_only_its_own_opaque_secrets(kubectl: Any, installed: Installed) -> None:
    ns = installed.target

    def op(*args: str, input: str | None = None) -> Any:
        return as_operator(kubectl, installed, *args, input=input)

    # Another type, or no managed-by label: refused, and the message says which rule.
    refused(
        op("create", "-f", "-", input=secret("tls", ns, type_="example.com/custom", labels=MANAGED)),
        "not example.com/custom",
    )
    refused(op("create", "-f", "-", input=secret("plain", ns)), "labelled app.kubernetes.io/managed-by")
    refused(
        op("create", "-f", "-", input=secret("wrong", ns, labels={"app.kubernetes.io/managed-by": "helm"})),
        "labelled app.kubernetes.io/managed-by",
    )
    # Labels another controller acts on (an Argo CD cluster Secret) are not the operator's to set.
    argo = {**MANAGED, "argocd.argoproj.io/secret-type": "cluster"}
    refused(op("create", "-f", "-", input=secret("argo", ns, labels=argo)), "argocd.argoproj.io/secret-type")

    # Its own kind of Secret: create, change, delete all pass.
    assert op("create", "-f", "-", input=secret("mine", ns, labels=MANAGED)).returncode == 0
    patched = op("patch", "secret", "mine", "-n", ns, "-p", json.dumps({"stringData": {"value": "y"}}))
    assert patched.returncode == 0, patched.stderr
    # ...but not to drop the label (it would lose track of the Secret and could then not delete it).
    unlabel = json.dumps({"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}})
    refused(op("patch", "secret", "mine", "-n", ns, "-p", unlabel), "labelled app.kubernetes.io/managed-by")
    assert op("delete", "secret", "mine", "-n", ns).returncode == 0

    # Somebody else's Secret: no taking it over by adding the label, no changing, no deleting.
    kubectl("create", "secret", "generic", "theirs", "-n", ns, "--from-literal=value=keep")
    relabel = json.dumps({"metadata": {"labels": MANAGED}})
    refused(op("patch", "secret", "theirs", "-n", ns, "-p", relabel), "theirs is not")
    refused(op("delete", "secret", "theirs", "-n", ns), "theirs is not")
    assert kubectl("get", "secret", "theirs", "-n", ns).returncode == 0
    kubectl("delete", "secret", "theirs", "-n", ns)


def test_the_policy_binds_nobody_but_the_operator(kubectl: Any, installed: Installed) -> None:
    """The admin, and a tenant's own ServiceAccount allowed to write Secrets, are not affected."""
    ns = installed.target
    name = f"legit-{secrets.token_hex(2)}"
    token = secret(name, ns, type_=TOKEN_TYPE, annotations={"kubernetes.io/service-account.name": PRIVILEGED})
    assert kubectl("create", "-f", "-", input=token).returncode == 0
    kubectl("delete", "secret", name, "-n", ns)
    kubectl("create", "role", "tenant-secrets", "-n", ns, "--verb=create,delete", "--resource=secrets")
    kubectl(
        "create",
        "rolebinding",
        "tenant-secrets",
        "-n",
        ns,
        "--role=tenant-secrets",
        f"--serviceaccount={ns}:tenant",
    )
    try:
        tenant = [f"--as=system:serviceaccount:{ns}:tenant", "--as-group=system:serviceaccounts"]
        made = kubectl(*tenant, "create", "-f", "-", input=secret("tenant-own", ns), check=False)
        assert made.returncode == 0, made.stderr
        kubectl(*tenant, "delete", "secret", "tenant-own", "-n", ns)
    finally:
        kubectl("delete", "rolebinding,role", "tenant-secrets", "-n", ns, "--ignore-not-found", check=False)


async def test_the_operators_own_secret_writes_pass(installed: Installed, mint_kubeconfig: Any) -> None:
    """The operator's adapter, with the operator's identity, writes and removes its Secrets."""
    user, groups = operator_user(installed.namespace)
    client = kubernetes.config.new_client_from_config(config_file=str(mint_kubeconfig(user, groups)))
    objects = KubeClusterObjects(client)
    labels = managed_labels("edge")
    for ns in installed.writable:
        name = kubeconfig_secret_name("edge")
        assert await objects.write_secret(ns, name, {"value": b"one"}, labels=labels, owner=None)
        assert await objects.write_secret(ns, name, {"value": b"two"}, labels=labels, owner=None)
        assert await objects.read_secret(ns, name) == {"value": b"two"}
        assert await objects.delete_managed_secret(ns, name, labels=labels)
        assert await objects.read_secret(ns, name) is None


ESCALATIONS = [
    ("create", "pods"),
    ("create", "pods/exec"),
    ("create", "deployments.apps"),
    ("create", "serviceaccounts/token"),
    ("create", "serviceaccounts"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
    ("impersonate", "users"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("update", "secrets"),
    ("deletecollection", "secrets"),
    ("create", "k3sclusters.k3sdeploy.io"),
    ("delete", "k3sclusters.k3sdeploy.io"),
    ("patch", "configmaps"),
    ("create", "validatingadmissionpolicybindings.admissionregistration.k8s.io"),
    ("delete", "validatingadmissionpolicies.admissionregistration.k8s.io"),
    ("create", "certificatesigningrequests.certificates.k8s.io"),
]


def test_no_path_to_more_rights(kubectl: Any, installed: Installed) -> None:
    """Nothing the operator may do mints credentials, runs code, or changes RBAC or the policy."""
    scopes = [*installed.writable, *installed.outside, installed.namespace]
    for verb, resource in ESCALATIONS:
        for ns in dict.fromkeys(scopes):
            answer = as_operator(kubectl, installed, "auth", "can-i", verb, resource, "-n", ns)
            assert answer.stdout.strip() == "no", (installed.overlay, verb, resource, ns, answer.stderr)
        everywhere = as_operator(kubectl, installed, "auth", "can-i", verb, resource, "--all-namespaces")
        assert everywhere.stdout.strip() == "no", (installed.overlay, verb, resource)


def test_each_overlay_reaches_only_its_namespaces(kubectl: Any, installed: Installed) -> None:
    """Secrets by name and the custom resources where bound; nothing at all elsewhere."""

    def can(verb: str, resource: str, ns: str | None) -> bool:
        where = ["-n", ns] if ns else ["--all-namespaces"]
        answer = as_operator(kubectl, installed, "auth", "can-i", verb, resource, *where).stdout.strip()
        assert answer in {"yes", "no"}, answer
        return answer == "yes"

    for ns in installed.writable:
        assert can("get", "secrets", ns) and can("create", "secrets", ns) and can("delete", "secrets", ns)
        assert can("list", "k3sclusters.k3sdeploy.io", ns) and can("create", "proxmoxvms.k3sdeploy.io", ns)
    for ns in installed.outside:
        for verb, resource in (
            ("get", "secrets"),
            ("create", "secrets"),
            ("list", "k3sclusters.k3sdeploy.io"),
        ):
            assert not can(verb, resource, ns), (installed.overlay, verb, resource, ns)
    cluster_wide = installed.overlay == "cluster-wide"
    assert can("list", "k3sclusters.k3sdeploy.io", None) is cluster_wide
    if installed.overlay == "tenant-namespaces":
        # its own namespace holds the Deployment, but no rights: a tenant's Secret cannot be planted there
        assert not can("get", "secrets", installed.namespace)
        for ns in installed.writable:
            assert can("patch", "kopfpeerings.kopf.dev/k3s-deploy", ns)
        assert not can("patch", "kopfpeerings.kopf.dev/k3s-deploy", installed.namespace)
    sa = kubectl("get", "serviceaccount", SERVICE_ACCOUNT, "-n", installed.namespace, "-o", "name")
    assert sa.stdout.strip() == f"serviceaccount/{SERVICE_ACCOUNT}"
