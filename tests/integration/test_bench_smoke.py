"""Smoke sizes of the benchmarks in bench/ (the full sizes run on demand: docs/performance.md).

Each runs the real benchmark command (own control plane, simulator, guests, operator process) and
checks what its figures claim: the simulated step durations are really in force (nothing beats the
critical path), one small cluster converges close to it, and the idle operator stays small and pays
O(1) Proxmox calls per resync interval, whatever the number of VMs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


def _run(module: str, out: Path, *args: str) -> Any:
    proc = subprocess.run([sys.executable, "-m", module, *args, "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=540)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_convergence_smoke(tmp_path: Path) -> None:
    data = _run("bench.convergence", tmp_path / "c.json", "--factor", "10", "--sizes", "1+0")
    (row,) = data["results"]
    assert row["criticalPath"] == pytest.approx(10.0, abs=0.1)
    # the scaled clone/boot/install durations hold: nothing can be faster than the critical path
    assert 1.0 <= row["ratio"] < 3.0, row
    assert row["phases"]["VMsReady"] >= 6.0 - 0.5, row  # clone + start + boot + agent = 6.0 s


def test_convergence_baseline_smoke(tmp_path: Path) -> None:
    """The old CLI's one-node-at-a-time way, run: each VM after the previous one, then each install."""
    data = _run("bench.convergence", tmp_path / "b.json", "--baseline", "--factor", "10", "--sizes", "1+1")
    (row,) = data["baseline"]
    assert row["computed"] == pytest.approx(20.1, abs=0.1)
    # one at a time really is the sum of the chains: never faster than computed
    assert row["seconds"] >= row["computed"] and row["measuredOverComputed"] < 3.0, row
    assert len(row["perVm"]) == 2 and all(s >= 6.0 - 0.5 for s in row["perVm"]), row
    assert row["installSeconds"] >= 2 * 4.0, row  # two installs of 4 s, one after the other


def test_footprint_smoke(tmp_path: Path) -> None:
    rows = _run("bench.footprint", tmp_path / "f.json", "--sizes", "5,40", "--idle", "12", "--resync", "4")
    small, large = rows
    assert large["rssMiB"] < 150, large
    # O(1) Proxmox calls per resync interval: 8x the VMs, not 8x the calls
    per_interval = [r["proxmoxCalls"] / (r["idleSeconds"] / 4) for r in rows]
    assert max(per_interval) <= 3, rows
    assert large["callsPerVmPerInterval"] < small["callsPerVmPerInterval"], rows
