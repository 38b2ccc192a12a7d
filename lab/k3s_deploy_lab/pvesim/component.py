"""Lab component: run the simulator as a subprocess in DIR/pve and publish its pve.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k3s_deploy_lab.stack import LabContext

START_TIMEOUT = 60.0
SCALE_ENV = "K3SD_PVESIM_SCALE"  # optional: multiply every simulated duration (lab demos, e2e runs)


def spawn(
    directory: Path, *, inventory: Path | None = None, log: Path | None = None, scale: float | None = None
) -> subprocess.Popen[bytes]:
    """Start `python -m k3s_deploy_lab.pvesim serve` with its state kept in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pve.json").unlink(missing_ok=True)
    args = [sys.executable, "-m", "k3s_deploy_lab.pvesim", "serve", "--state", str(directory / "state.json"),
            "--dir", str(directory), "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
    if inventory is not None:
        args += ["--inventory", str(inventory)]
    if scale is not None:
        args += ["--scale", str(scale)]
    out = (log or directory / "pvesim.log").open("ab")
    try:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    finally:
        out.close()


def wait_ready(
    proc: subprocess.Popen[bytes], directory: Path, timeout: float = START_TIMEOUT
) -> dict[str, Any]:
    """Block until DIR/pve.json appears (the server is listening); returns its contents."""
    deadline = time.monotonic() + timeout
    path = directory / "pve.json"
    while time.monotonic() < deadline:
        if path.exists():
            published: dict[str, Any] = json.loads(path.read_text())
            return published
        if proc.poll() is not None:
            tail = (directory / "pvesim.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pvesim exited with {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    raise TimeoutError(f"pvesim did not write {path} within {timeout} s")


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lab_inventory(directory: Path, block: str | None) -> Path:
    """DIR/pve/inventory.yaml: the sample inventory with the lab's leased block as DHCP range."""
    import yaml

    from k3s_deploy_lab.pvesim.inventory import SAMPLE

    path = directory / "inventory.yaml"
    if not path.exists():
        data = yaml.safe_load(SAMPLE.read_text())
        if block is not None:
            data["dhcp"] = {**data.get("dhcp", {}), "range": block}
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def lab_component(ctx: LabContext) -> AsyncIterator[None]:
    directory = ctx.dir / "pve"
    scale = os.environ.get(SCALE_ENV)
    inventory = lab_inventory(directory, ctx.block)
    proc = spawn(directory, inventory=inventory, scale=float(scale) if scale else None)
    ctx.record_pid(proc.pid)
    try:
        facts = await asyncio.to_thread(wait_ready, proc, directory)
        ctx.facts["pve"] = facts
        shutil.copyfile(directory / "pve.json", ctx.dir / "pve.json")
        (ctx.dir / "pve.json").chmod(0o600)
        ctx.log(f"pve simulator at {facts['url']} (CA {facts['caCert']}); guest addresses from {ctx.block}")
        yield
    finally:
        await asyncio.to_thread(terminate, proc)
