"""`kubectl apply -k manifests/overlays/<overlay>` installs everything in ONE apply on a fresh cluster.

Each overlay gets its own new control plane (etcd + kube-apiserver, nothing installed): the CRDs,
the namespace, RBAC and the Deployment arrive in the same run, as a new user types it. An install
holding a custom object whose CRD comes in the same apply fails here (kubectl maps every kind before
it creates anything). And a user's own kustomization can point the Deployment at another image.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fixtures.kube import EXTERNAL_ENV, _kubectl_binary
from k3s_deploy_lab.controlplane import ControlPlane
from unit.shipping.kustomize import MANIFESTS, SERVICE_ACCOUNT, overlays_present

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    if os.environ.get(EXTERNAL_ENV):
        pytest.skip(f"needs a fresh local control plane, not the cluster in ${EXTERNAL_ENV}")
    plane = ControlPlane(tmp_path / "plane")
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


def kubectl(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(_kubectl_binary()), "--kubeconfig", str(plane.admin_kubeconfig), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def create_foreign_namespaces(plane: ControlPlane, kustomization: Path) -> list[str]:
    """Create the namespaces an install places objects in without creating them itself (the
    tenant namespaces of tenant-namespaces: the tenants', documented to exist first)."""
    rendered = kubectl(plane, "kustomize", str(kustomization)).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    created = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    foreign = sorted({d["metadata"]["namespace"] for d in docs if d["metadata"].get("namespace")} - created)
    for namespace in foreign:
        assert kubectl(plane, "create", "namespace", namespace).returncode == 0
    return foreign


@pytest.mark.timeout(240)
@pytest.mark.parametrize("overlay", overlays_present())
def test_one_apply_installs_the_overlay_on_a_fresh_cluster(overlay: str, fresh_plane: ControlPlane) -> None:
    assert kubectl(fresh_plane, "get", "crd", "-o", "name").stdout.strip() == "", "not a fresh cluster"
    create_foreign_namespaces(fresh_plane, MANIFESTS / "overlays" / overlay)
    applied = kubectl(fresh_plane, "apply", "-k", str(MANIFESTS / "overlays" / overlay))
    assert applied.returncode == 0, f"the first apply failed:\n{applied.stdout}\n{applied.stderr}"

    rendered = kubectl(fresh_plane, "kustomize", str(MANIFESTS / "overlays" / overlay)).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for doc in docs:
        meta = doc["metadata"]
        where = ["-n", meta["namespace"]] if meta.get("namespace") else []
        kind = (
            doc["kind"].lower() + "." + doc["apiVersion"].rsplit("/", 1)[0]
            if "/" in doc["apiVersion"]
            else doc["kind"].lower()
        )
        got = kubectl(fresh_plane, "get", kind, meta["name"], *where, "-o", "json")
        assert got.returncode == 0, f"{doc['kind']} {meta['name']} missing after one apply: {got.stderr}"
    # The operator creates its kopf peering object itself at start-up: its account may do so there.
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    ns = deployment["metadata"]["namespace"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    watched = [
        a.split("=", 1)[1].replace("$(POD_NAMESPACE)", ns) for a in args if a.startswith("--namespace=")
    ]
    plural = "kopfpeerings" if watched else "clusterkopfpeerings"
    for where in watched or [ns]:
        can = kubectl(
            fresh_plane, "auth", "can-i", "create", f"{plural}.kopf.dev", "-n", where,
            f"--as=system:serviceaccount:{ns}:{SERVICE_ACCOUNT}",
        )  # fmt: skip
        assert can.stdout.strip() == "yes", (plural, where, can.stdout, can.stderr)
    # Applying again changes nothing and still succeeds (what GitOps tools and upgrades do).
    again = kubectl(fresh_plane, "apply", "-k", str(MANIFESTS / "overlays" / overlay))
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("overlay", overlays_present())
def test_a_users_kustomization_overrides_the_image(overlay: str, tmp_path: Path) -> None:
    """The documented override: `images:` in the user's kustomization on top of an overlay."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS / "overlays" / overlay, user)],
                "images": [
                    {
                        "name": "ghcr.io/k3s-deploy/k3s-deploy",
                        "newName": "registry.example/platform/k3s-deploy",
                        "newTag": "9.9.9",
                    }
                ],
            }
        )
    )
    out = subprocess.run(
        [str(_kubectl_binary()), "kustomize", str(user)], capture_output=True, text=True, check=True
    ).stdout
    images = [
        c["image"]
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert images == ["registry.example/platform/k3s-deploy:9.9.9"], json.dumps(images)
