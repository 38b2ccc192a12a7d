"""Render the kustomize overlays with a real kubectl (the lab's, else one on PATH)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["cluster-wide", "single-namespace"]


def find_kubectl() -> str | None:
    """The kubectl `k3s-deploy lab build` made (what CI uses), else any kubectl on PATH."""
    from k3s_deploy.lab.controlplane.build import targets

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
