"""The tenant-namespaces overlay, edited the way its comments tell a user to, in a copy of manifests/.

A user lists their namespaces in tenants.yaml (one block per namespace, copied from the `team-a`
block) and in the `--namespace` arguments, and may move the operator with `namespace:` in
operator/kustomization.yaml. Tests do exactly that in a scratch copy, so each test gets fresh names.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from unit.shipping.kustomize import MANIFESTS, apply_kustomization

OVERLAY = Path("overlays") / "tenant-namespaces"
OPERATOR_NAMESPACE = "k3s-deploy-system"
EXAMPLE_TENANTS = ("team-a", "team-b")


def _namespace_args(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployment patch's `--namespace=` operations (the list a user edits)."""
    (patch,) = [p for p in kustomization["patches"] if p["target"]["kind"] == "Deployment"]
    return [op for op in yaml.safe_load(patch["patch"]) if str(op["value"]).startswith("--namespace=")]


def listed_namespaces(overlay: Path) -> list[str]:
    """The namespaces named by the `--namespace` arguments of a tenant-namespaces overlay."""
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    return [str(op["value"]).removeprefix("--namespace=") for op in _namespace_args(kustomization)]


def edit_copy(workdir: Path, operator_namespace: str, tenants: list[str]) -> Path:
    """A copy of manifests/ whose tenant overlay lists ``tenants``; returns the overlay's directory."""
    root = workdir / "manifests"
    shutil.copytree(MANIFESTS, root)
    overlay = root / OVERLAY
    operator = overlay / "operator" / "kustomization.yaml"
    text = operator.read_text()
    assert f"namespace: {OPERATOR_NAMESPACE}\n" in text
    operator.write_text(
        text.replace(f"namespace: {OPERATOR_NAMESPACE}\n", f"namespace: {operator_namespace}\n")
    )

    example = [d for d in yaml.safe_load_all((overlay / "tenants.yaml").read_text()) if d]
    block = [d for d in example if d["metadata"]["namespace"] == EXAMPLE_TENANTS[0]]
    docs = []
    for tenant in tenants:
        for doc in block:
            copy = yaml.safe_load(yaml.safe_dump(doc))
            copy["metadata"]["namespace"] = tenant
            docs.append(copy)
    (overlay / "tenants.yaml").write_text(yaml.safe_dump_all(docs))

    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    (patch,) = [p for p in kustomization["patches"] if p["target"]["kind"] == "Deployment"]
    ops = [op for op in yaml.safe_load(patch["patch"]) if op not in _namespace_args(kustomization)]
    ops += [
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": f"--namespace={t}"}
        for t in tenants
    ]
    patch["patch"] = yaml.safe_dump(ops)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def install_tenants(
    kubectl: Any, operator_namespace: str, tenants: list[str], workdir: Path
) -> list[dict[str, Any]]:
    """The documented tenant-namespaces install (namespaces exist first). Returns what was applied."""
    return apply_kustomization(kubectl, edit_copy(workdir, operator_namespace, tenants))
