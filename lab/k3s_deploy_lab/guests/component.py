"""Lab component `guests`: run the guests process next to the simulator and publish where guests answer.

Needs the `pve` component (DIR/pve.json with ``adminUrl``). Adds ``guestSshPort``, ``k3sInstallUrl``
and ``k3sChannelUrl`` to DIR/pve.json and to ``ctx.facts["pve"]``, and ``ctx.facts["guests"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k3s_deploy_lab.controlplane import processes
from k3s_deploy_lab.guests.service import READY_FILE

if TYPE_CHECKING:
    from k3s_deploy_lab.stack import LabContext

START_TIMEOUT = 120.0


def spawn(lab_dir: Path, *, ssh_port: int | None = None, record_pid: Any = None) -> subprocess.Popen[bytes]:
    """Start `python -m k3s_deploy_lab.guests serve` for the lab in ``lab_dir``."""
    state = lab_dir / "guests"
    state.mkdir(parents=True, exist_ok=True)
    (state / READY_FILE).unlink(missing_ok=True)
    port = ssh_port or int(os.environ.get("K3SD_GUEST_SSH_PORT") or processes.free_port())
    args = [sys.executable, "-m", "k3s_deploy_lab.guests", "serve", "--dir", str(lab_dir),
            "--ssh-port", str(port)]  # fmt: skip
    return processes.spawn(args, log_path=state / "guests.log", record_pid=record_pid)


def wait_ready(
    proc: subprocess.Popen[bytes], lab_dir: Path, timeout: float = START_TIMEOUT
) -> dict[str, Any]:
    """Block until the guests process wrote its ready file; return it."""
    path = lab_dir / "guests" / READY_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            ready: dict[str, Any] = json.loads(path.read_text())
            return ready
        if proc.poll() is not None:
            raise RuntimeError(f"guests process exited with {proc.returncode}:\n"
                               f"{processes.tail(lab_dir / 'guests' / 'guests.log')}")  # fmt: skip
        time.sleep(0.05)
    raise TimeoutError(
        f"guests process not ready within {timeout:.0f}s; see {lab_dir / 'guests' / 'guests.log'}"
    )


def publish(lab_dir: Path, ready: dict[str, Any]) -> dict[str, Any]:
    """Record the guests' SSH port and installer URL in DIR/pve.json (keeping its 0600 mode)."""
    path = lab_dir / "pve.json"
    info: dict[str, Any] = json.loads(path.read_text())
    info["guestSshPort"] = ready["sshPort"]
    info["k3sInstallUrl"] = ready["k3sInstallUrl"]
    info["k3sChannelUrl"] = ready["k3sChannelUrl"]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return info


@contextlib.asynccontextmanager
async def lab_component(ctx: LabContext) -> AsyncIterator[None]:
    if "pve" not in ctx.facts or not (ctx.dir / "pve.json").exists():
        raise RuntimeError("the guests component needs the pve component (DIR/pve.json)")
    proc = spawn(ctx.dir, record_pid=ctx.record_pid)
    try:
        ready = await asyncio.to_thread(wait_ready, proc, ctx.dir)
        info = publish(ctx.dir, ready)
        ctx.facts["pve"].update(
            guestSshPort=info["guestSshPort"],
            k3sInstallUrl=info["k3sInstallUrl"],
            k3sChannelUrl=info["k3sChannelUrl"],
        )
        ctx.facts["guests"] = ready
        ctx.log(
            f"guests: SSH on port {ready['sshPort']} at each VM address; K3s installer {ready['k3sInstallUrl']}"
        )
        yield
    finally:
        await asyncio.to_thread(processes.stop_group, proc)
