"""The kustomize install, rendered by a real kubectl: contents, security settings, scope and RBAC."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from k3s_deploy.cli import run as run_command
from k3s_deploy.settings import OperatorSettings
from unit.shipping.kustomize import MANIFESTS, OVERLAYS, ROOT, find_kubectl, render
from unit.shipping.rbac import can, grants_for

NAMESPACE = "k3s-deploy-system"
SA = "k3s-deploy-operator"
KUBECTL = find_kubectl()

Docs = list[dict[str, Any]]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, Docs]:
    if KUBECTL is None:
        pytest.skip("no kubectl: run `k3s-deploy lab build`")
    return request.param, render(KUBECTL, request.param)


def one(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container(docs: Docs) -> dict[str, Any]:
    deployment = one(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def pod_env(docs: Docs) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container(docs)["env"]:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = NAMESPACE
    return env


def test_crd_copies_match_the_generated_crds() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    copies = MANIFESTS / "base" / "crds"
    assert generated, "crds/ is empty"
    listed = yaml.safe_load((copies / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted([*generated, "kopf-peering-crds.yaml"])
    for name in generated:
        assert (copies / name).read_text() == (ROOT / "crds" / name).read_text(), (
            f"manifests/base/crds/{name} drifted: cp crds/*.yaml manifests/base/crds/"
        )


def test_everything_namespaced_lands_in_the_operator_namespace(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    assert one(docs, "Namespace")["metadata"]["name"] == NAMESPACE
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    for doc in docs:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACE, (doc["kind"], doc["metadata"]["name"])
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {
        "k3sclusters.k3sdeploy.io",
        "proxmoxvms.k3sdeploy.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


def test_deployment_is_hardened(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["serviceAccountName"] == SA
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    # the only writable paths are emptyDirs: /tmp (the image's HOME and TMPDIR) and the download volume
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert sorted(mounts) == ["/tmp", "/var/cache/k3s-deploy"]
    for path in mounts:
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[path])
        assert "emptyDir" in volume
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][key])


def test_downloads_have_a_volume_larger_than_their_budget(overlay: tuple[str, Docs]) -> None:
    """Air-gap downloads go to their own emptyDir, and the operator's budget fits in it with room to
    spare for the largest artefact (a 64 Mi /tmp would get the pod evicted by a K3s binary)."""
    from k3s_deploy.services.k3scluster import airgap

    _, docs = overlay
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    env = {e["name"]: e.get("value") for e in c["env"]}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == env["K3SD_FETCH_DIR"])
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    size = volume["emptyDir"]["sizeLimit"]
    assert size.endswith("Gi")
    limit = int(size.removesuffix("Gi")) << 30
    budget = int(env["K3SD_FETCH_BUDGET_BYTES"])
    one_cluster = airgap.MAX_INSTALLER_BYTES + airgap.MAX_BINARY_BYTES + airgap.MAX_IMAGES_BYTES
    assert one_cluster <= budget and budget + airgap.MAX_IMAGES_BYTES // 2 <= limit
    assert "K3SD_FETCH_ALLOWED_HOSTS" not in env  # off until an admin lists hosts


def test_image_is_pinned_to_the_project_version(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    image = container(docs)["image"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image.rsplit(":", 1)[1] == version
    assert "latest" not in image


def test_probes_hit_the_liveness_endpoint_the_operator_serves(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    c = container(docs)
    env = pod_env(docs)
    match = re.fullmatch(r"http://0\.0\.0\.0:(\d+)(/\S+)", env["K3SD_LIVENESS_ENDPOINT"])
    assert match, env["K3SD_LIVENESS_ENDPOINT"]
    port, path = int(match.group(1)), match.group(2)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == port
    assert ports["metrics"] == int(env["K3SD_METRICS_PORT"])
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_env_is_valid_operator_settings(overlay: tuple[str, Docs], monkeypatch: pytest.MonkeyPatch) -> None:
    _, docs = overlay
    env = pod_env(docs)
    for name, value in env.items():
        if name.startswith("K3SD_"):
            assert name.removeprefix("K3SD_").lower() in OperatorSettings.model_fields, name
            monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.standalone is False  # peering on: two replicas, one active
    assert settings.metrics_address == "0.0.0.0" and settings.log_format == "json"
    assert one(docs, "Deployment")["spec"]["replicas"] >= 2


def test_scope_flag_and_no_custom_object_in_the_install(overlay: tuple[str, Docs]) -> None:
    name, docs = overlay
    env = pod_env(docs)
    args = [expand(a, env) for a in container(docs)["args"]]
    params = run_command.make_context("run", list(args)).params
    assert env["K3SD_PEERING_NAME"]
    if name == "cluster-wide":
        assert params["all_namespaces"] is True and not params["namespaces"]
    else:
        assert params["namespaces"] == (NAMESPACE,) and not params["all_namespaces"]
    # One `kubectl apply -k` must work on a fresh cluster: no object of a kind whose CRD arrives in
    # the same apply (kubectl maps every kind first). The operator creates its peering object itself.
    crd_kinds = {d["spec"]["names"]["kind"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert not [d["kind"] for d in docs if d["kind"] in crd_kinds]


def test_rbac_is_least_privilege(overlay: tuple[str, Docs]) -> None:
    name, docs = overlay
    grants = grants_for(docs, NAMESPACE, SA)
    assert grants, "the ServiceAccount is bound to nothing"
    for doc in docs:
        for rule in doc.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), (doc["metadata"]["name"], rule)
    other = "team-a"
    where = [NAMESPACE] if name == "single-namespace" else [NAMESPACE, other]
    for ns in where:
        for verb in ("get", "list", "watch", "patch"):
            assert can(grants, verb, "k3sclusters", group="k3sdeploy.io", namespace=ns)
            assert can(grants, verb, "proxmoxvms", group="k3sdeploy.io", namespace=ns)
        assert can(grants, "create", "proxmoxvms", group="k3sdeploy.io", namespace=ns)
        assert can(grants, "delete", "proxmoxvms", group="k3sdeploy.io", namespace=ns)
        assert can(grants, "patch", "k3sclusters/status", group="k3sdeploy.io", namespace=ns)
        assert can(grants, "patch", "proxmoxvms/status", group="k3sdeploy.io", namespace=ns)
        assert can(grants, "get", "secrets", namespace=ns)
        assert can(grants, "create", "secrets", namespace=ns)
        assert can(grants, "create", "events", namespace=ns)
        # never: browse Secrets, create or delete the user's clusters
        assert not can(grants, "list", "secrets", namespace=ns)
        assert not can(grants, "watch", "secrets", namespace=ns)
        assert not can(grants, "create", "k3sclusters", group="k3sdeploy.io", namespace=ns)
        assert not can(grants, "delete", "k3sclusters", group="k3sdeploy.io", namespace=ns)
    if name == "single-namespace":
        assert not can(grants, "get", "secrets", namespace=other)
        assert not can(grants, "list", "k3sclusters", group="k3sdeploy.io", namespace=other)
        assert not can(grants, "list", "k3sclusters", group="k3sdeploy.io")  # cluster-wide list
        assert can(grants, "list", "namespaces") and can(grants, "watch", "namespaces")
        assert can(grants, "patch", "kopfpeerings", group="kopf.dev", namespace=NAMESPACE, name="k3s-deploy")
        assert can(grants, "create", "kopfpeerings", group="kopf.dev", namespace=NAMESPACE)
        assert not can(grants, "patch", "clusterkopfpeerings", group="kopf.dev", name="k3s-deploy")
        assert not can(grants, "create", "clusterkopfpeerings", group="kopf.dev")
    else:
        assert not can(grants, "list", "namespaces")  # a cluster-wide kopf does not scan namespaces
        assert can(grants, "patch", "clusterkopfpeerings", group="kopf.dev", name="k3s-deploy")
        assert can(grants, "create", "clusterkopfpeerings", group="kopf.dev")
        assert not can(grants, "patch", "clusterkopfpeerings", group="kopf.dev", name="someone-else")
    for verb in ("list", "watch"):
        assert can(grants, verb, "customresourcedefinitions", group="apiextensions.k8s.io")
    for verb in ("create", "delete", "patch"):
        assert not can(grants, verb, "customresourcedefinitions", group="apiextensions.k8s.io")
        assert not can(grants, verb, "namespaces")
    assert not can(grants, "create", "pods", namespace=NAMESPACE)
    assert not can(grants, "escalate", "clusterroles", group="rbac.authorization.k8s.io")


def test_kustomizations_only_reference_files_inside_manifests() -> None:
    for path in MANIFESTS.rglob("kustomization.yaml"):
        data = yaml.safe_load(path.read_text())
        for entry in data.get("resources", []):
            target = (path.parent / entry).resolve()
            assert target.exists(), (path, entry)
            assert MANIFESTS.resolve() in target.parents, (path, entry)
