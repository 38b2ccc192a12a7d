"""The `guests` lab component: a separate guests process next to the simulator, published in pve.json."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path

import pytest

from k3s_deploy_lab.stack import LabContext, running

pytestmark = pytest.mark.integration


async def test_lab_with_pve_and_guests_publishes_ssh_port_and_installer(tmp_path: Path) -> None:
    ctx = LabContext(dir=tmp_path, components=("pve", "guests"))
    async with running(ctx):
        info = json.loads((tmp_path / "pve.json").read_text())
        assert isinstance(info["guestSshPort"], int)
        assert info["k3sInstallUrl"].startswith("http://127.0.0.1:")
        assert ctx.facts["pve"]["guestSshPort"] == info["guestSshPort"]
        assert oct((tmp_path / "pve.json").stat().st_mode & 0o777) == "0o600"
        script = await asyncio.to_thread(
            lambda: urllib.request.urlopen(info["k3sInstallUrl"]).read().decode()  # noqa: S310 - lab http URL
        )
        assert script.startswith("#!/bin/sh") and "INSTALL_K3S_" in script
        channels_url = info["k3sChannelUrl"]
        assert channels_url == info["k3sInstallUrl"].replace("/k3s/install.sh", "/v1-release/channels")
        channels = json.loads(
            await asyncio.to_thread(lambda: urllib.request.urlopen(channels_url).read())  # noqa: S310 - lab http URL
        )
        assert {"id": "stable", "latest": "v1.31.4+k3s1"}.items() <= next(
            c for c in channels["data"] if c["id"] == "stable"
        ).items()
        guests_pid = ctx.facts["guests"]["pid"]
        assert str(guests_pid) in (tmp_path / "pids").read_text().split()
        os.kill(guests_pid, 0)
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(guests_pid, 0)
            await asyncio.sleep(0.1)
