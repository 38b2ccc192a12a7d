"""Render the kustomize overlays with a real kubectl (the lab's, else one on PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["cluster-wide", "single-namespace"]


def overlays_present() -> list[str]:
    """Every overlay shipped in manifests/overlays (tests that must cover each one iterate these)."""
    return sorted(p.parent.name for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))


def find_kubectl() -> str | None:
    """The kubectl `k3s-deploy lab build` made (what CI uses), else any kubectl on PATH."""
    from k3s_deploy_lab.controlplane.build import targets

    built = next((t.path for t in targets() if t.name == "kubectl"), None)
    if built is not None and built.is_file():
        return str(built)
    return shutil.which("kubectl")


def render(kubectl: str, overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


SERVICE_ACCOUNT = "k3s-deploy-operator"


def wrapper_kustomization(workdir: Path, overlay: str, namespace: str) -> Path:
    """A kustomization that only moves an overlay to another namespace (`kustomize edit set namespace`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = os.path.relpath(MANIFESTS / "overlays" / overlay, workdir)
    (workdir / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": namespace,
                "resources": [base],
            }
        )
    )
    return workdir


def install(kubectl: Any, overlay: str, namespace: str, workdir: Path) -> list[dict[str, Any]]:
    """The documented install into ``namespace``: one apply of the overlay. Returns what was applied."""
    return apply_kustomization(kubectl, wrapper_kustomization(workdir, overlay, namespace))


def apply_kustomization(kubectl: Any, directory: Path) -> list[dict[str, Any]]:
    """One `kubectl apply -k` of ``directory`` (CRDs included), as a new user installs."""
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(directory)).stdout) if d]
    kubectl("apply", "-k", str(directory))
    kubectl("wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=k3s-deploy")
    return docs


CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterKopfPeering",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def cluster_scoped_names(docs: list[dict[str, Any]]) -> list[str]:
    """kubectl names of the install's cluster-scoped objects except CRDs (shared with other tests)."""
    out = []
    for d in docs:
        if d["kind"] in CLUSTER_SCOPED:
            group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
            out.append(f"{d['kind'].lower()}{'.' + group if group else ''}/{d['metadata']['name']}")
    return out


def operator_user(namespace: str) -> tuple[str, list[str]]:
    """The user name and groups a ServiceAccount token of the operator authenticates as."""
    return (
        f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
    )
