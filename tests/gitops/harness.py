"""Build and call the Go harnesses in this folder: kstatus (sigs.k8s.io/cli-utils) and Argo CD's Lua
sandbox (github.com/yuin/gopher-lua). Binaries are built once per source digest and kept under the
user's cache folder, so a second run costs no compile; the module cache is Go's own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
HEALTH_LUA = ROOT / "manifests" / "argocd" / "health.lua"
GO = shutil.which("go")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "k3s-deploy" / "gitops-harness"

needs_go = pytest.mark.skipif(GO is None, reason="go not on PATH: the kstatus and gopher-lua checks need Go")


def _digest(tool: str) -> str:
    h = hashlib.sha256()
    for path in sorted([HERE / "go.mod", HERE / "go.sum", *(HERE / tool).glob("*.go")]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def binary(tool: str) -> Path:
    """The built harness ``tool`` (kstatus or argocdlua), built now when its sources changed."""
    assert GO is not None
    out = CACHE / f"{tool}-{_digest(tool)}"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        built = Path(tmp) / tool
        done = subprocess.run(
            [GO, "build", "-o", str(built), f"./{tool}"],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise AssertionError(f"go build ./{tool} failed:\n{done.stderr}")
        built.replace(out)  # atomic: a concurrent run sees the whole binary or none
    return out


def _run(tool: str, payload: Any) -> list[dict[str, str]]:
    done = subprocess.run(
        [str(binary(tool))], input=json.dumps(payload), capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise AssertionError(f"{tool} failed: {done.stderr}")
    out: list[dict[str, str]] = json.loads(done.stdout)
    return out


def kstatus(*objects: dict[str, Any]) -> list[dict[str, str]]:
    """kstatus ``Compute`` of each object: {status: Current|InProgress|Failed|..., message, error}."""
    return _run("kstatus", list(objects))


def argocd(*objects: dict[str, Any], script: str | None = None) -> list[dict[str, str]]:
    """Argo CD's verdict on each object from the health script: {status, message, error}."""
    return _run(
        "argocdlua", {"script": script if script is not None else HEALTH_LUA.read_text(), "objects": objects}
    )


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    """(status, message) of one object; a script error fails the calling test with Lua's message."""
    got = argocd(obj, script=script)[0]
    if got.get("error"):
        raise AssertionError(f"the health script failed under Argo CD's Lua: {got['error']}")
    return got["status"], got["message"]
