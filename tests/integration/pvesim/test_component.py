"""The lab component and `k3s-deploy lab up --components pve` start the simulator and publish pve.json."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from k3s_deploy_lab.pvesim.component import spawn, terminate, wait_ready
from k3s_deploy_lab.stack import LabContext, running

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_component_publishes_facts_and_stops(tmp_path: Path) -> None:
    ctx = LabContext(dir=tmp_path, components=("pve",))
    async with running(ctx):
        facts = ctx.facts["pve"]
        assert facts["url"].startswith("https://127.0.0.1:")
        copied = json.loads((tmp_path / "pve.json").read_text())
        assert copied == facts
        assert stat.S_IMODE((tmp_path / "pve.json").stat().st_mode) == 0o600
        headers = {"Authorization": f"PVEAPIToken={facts['tokenId']}={facts['tokenSecret']}"}
        resp = await asyncio.to_thread(
            requests.get,
            facts["url"] + "/api2/json/cluster/resources",
            headers=headers,
            verify=facts["caCert"],
            timeout=10,
        )
        assert resp.status_code == 200 and len(resp.json()["data"]) > 10
        pid = int(facts["pid"])
        assert int((tmp_path / "pids").read_text().split()[0]) == pid
        assert (tmp_path / "pve" / "state.json").exists()
    assert not _alive(pid)


def test_lab_up_detached_and_down(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    cli = [sys.executable, "-m", "k3s_deploy", "lab"]
    up = subprocess.run([*cli, "up", "--components", "pve", "--dir", str(lab), "--detach"], capture_output=True,
                        text=True, timeout=120)  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads((lab / "pve.json").read_text())
        assert set(info) >= {"url", "caCert", "tokenId", "tokenSecret", "username", "password", "adminUrl"}
        guests = requests.get(info["adminUrl"] + "/guests", verify=info["caCert"], timeout=10).json()
        assert guests["revision"] >= 1
    finally:
        subprocess.run([*cli, "down", "--dir", str(lab)], capture_output=True, timeout=120, check=True)
    assert not _alive(int(info["pid"]))


def test_scale_flag_overrides_timing(tmp_path: Path) -> None:
    proc = spawn(tmp_path, scale=0.001)
    try:
        info = wait_ready(proc, tmp_path)
        timing = requests.get(info["adminUrl"] + "/timing", verify=info["caCert"], timeout=10).json()
        assert timing["scale"] == 0.001 and timing["tasks"]["qmclone"] == 20.0
    finally:
        terminate(proc)
