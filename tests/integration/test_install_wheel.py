"""What the Dockerfile's builder stage does, done here without Docker.

The build context is assembled exactly as .dockerignore admits it, the wheel is built from it with
pip (as the builder stage runs it), installed into a fresh virtualenv with its dependencies, and the
installed console script must answer `--help`, `run --help` and `crds print` from inside that venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from unit.shipping.dockerfile import dockerignore_excludes, read_dockerignore

ROOT = Path(__file__).resolve().parents[2]


def build_context(dest: Path) -> Path:
    patterns = read_dockerignore(ROOT / ".dockerignore")
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in tracked:
        if dockerignore_excludes(patterns, rel) or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    return dest


# Import names of the operator's dependencies whose distribution is named otherwise.
IMPORT_TO_DIST = {"yaml": "pyyaml", "prometheus_client": "prometheus-client",
                  "pydantic_settings": "pydantic-settings"}  # fmt: skip


def canonical(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0]).lower()


def imported_distributions(source: Path) -> set[str]:
    """Distributions the operator's source imports at top level or in functions."""
    found = set()
    for path in source.rglob("*.py"):
        for module in re.findall(r"^\s*(?:from|import) ([A-Za-z_][A-Za-z0-9_]*)", path.read_text(), re.M):
            found.add(canonical(IMPORT_TO_DIST.get(module, module)))
    return found


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.timeout(900)
def test_wheel_builds_from_the_docker_context_and_runs_from_a_clean_venv(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context")
    assert not (context / "tests").exists() and not (context / ".git").exists()
    wheels = tmp_path / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context)],
        tmp_path,
    )
    [wheel] = list(wheels.glob("k3s_deploy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "k3s_deploy/cli.py" in names and "k3s_deploy/metrics.py" in names
    assert not [n for n in names if n.startswith(("tests/", "operator/")) or "__pycache__" in n]
    # The operator's wheel carries no lab: no simulator, guests or control plane, no `lab` command.
    lab_files = [n for n in names if n.startswith(("k3s_deploy/lab/", "k3s_deploy_lab/", "lab/"))]
    assert not lab_files, lab_files[:5]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [
        line.split(":", 1)[1].strip().split(";")[0]
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    used = imported_distributions(context / "operator")
    assert {canonical(r) for r in requires} <= used, (
        f"dependencies the operator never imports (the lab's?): {sorted({canonical(r) for r in requires} - used)}"
    )
    entry_points = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
    assert entry_points is None or "k3s_deploy_lab" not in zipfile.ZipFile(wheel).read(entry_points).decode()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path)

    location = run([str(python), "-c", "import k3s_deploy; print(k3s_deploy.__file__)"], tmp_path)
    assert Path(location.strip()).is_relative_to(venv), location
    script = str(venv / "bin" / "k3s-deploy")
    assert "Turn Proxmox VE virtual machines into K3s clusters" in run([script, "--help"], tmp_path)
    # Without the lab installed, `k3s-deploy lab` says how to get it instead of failing obscurely.
    missing = subprocess.run([script, "lab", "up"], capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "k3s-deploy-lab" in missing.stderr and "./dev setup" in missing.stderr
    assert "--all-namespaces" in run([script, "run", "--help"], tmp_path)
    printed = [d for d in yaml.safe_load_all(run([script, "crds", "print"], tmp_path)) if d]
    expected = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert sorted(d["metadata"]["name"] for d in printed) == sorted(d["metadata"]["name"] for d in expected)
    assert sorted(printed, key=lambda d: d["metadata"]["name"]) == sorted(
        expected, key=lambda d: d["metadata"]["name"]
    )
