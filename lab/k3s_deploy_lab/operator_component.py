"""Lab component `operator`: install the CRDs and run `k3s-deploy run` as a separate process.

The operator runs exactly as in production (same CLI, kopf, real adapters) against the lab's control
plane; it reaches the simulator and the guests only through the objects the `cluster` component (or
the user) creates. Publishes ``ctx.facts["operator"]`` (pid, log, liveness URL) and writes its log
to DIR/operator/operator.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from k3s_deploy_lab.controlplane import processes

if TYPE_CHECKING:
    from k3s_deploy_lab.stack import LabContext

START_TIMEOUT = 90.0
LAB_ALLOWED_HOSTS = "127.0.0.1"


def kubectl_path() -> str:
    """The lab's own kubectl (built with the control plane), else one on PATH."""
    from k3s_deploy_lab.controlplane.build import cached_binaries

    built = cached_binaries()
    if built is not None:
        return str(built["kubectl"])
    return "kubectl"


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def install_crds(kubeconfig: Path) -> None:
    from k3s_deploy.api.crdgen import render_all

    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", input=render_all())
    for plural in ("proxmoxvms", "k3sclusters"):
        wait_established(kubeconfig, f"crd/{plural}.k3sdeploy.io")


def wait_established(kubeconfig: Path, crd: str, timeout_s: float = 60.0) -> None:
    """``kubectl wait`` for Established, again while the new CRD has no status yet: kubectl then
    fails at once with "accessor error: <nil>" instead of waiting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            kubectl(kubeconfig, "wait", "--for", "condition=Established", "--timeout=60s", crd)
            return
        except RuntimeError as exc:
            if "accessor error" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def spawn_operator(
    kubeconfig: Path,
    log_path: Path,
    *,
    port: int,
    env: dict[str, str] | None = None,
    record_pid: Callable[[int], None] | None = None,
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "k3s_deploy", "run", "-A", "--standalone",
            "--liveness", f"http://127.0.0.1:{port}/healthz"]  # fmt: skip
    full_env = {**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})}
    return processes.spawn(args, log_path=log_path, record_pid=record_pid, env=full_env)


def wait_live(
    proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {proc.returncode}:\n{processes.tail(log_path)}")
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"the operator was not live within {timeout:.0f}s; see {log_path}")


@contextlib.asynccontextmanager
async def lab_component(ctx: LabContext) -> AsyncIterator[None]:
    kubeconfig = ctx.kubeconfig or (Path(ctx.facts["kubeconfig"]) if ctx.facts.get("kubeconfig") else None)
    if kubeconfig is None:
        raise RuntimeError("the operator component needs the controlplane component (or --kubeconfig)")
    await asyncio.to_thread(install_crds, kubeconfig)
    port = processes.free_port()
    log_path = ctx.dir / "operator" / "operator.log"
    env = {
        "K3SD_RESYNC_SECONDS": os.environ.get("K3SD_RESYNC_SECONDS", "30"),
        # The lab's release channel server is on loopback: allowed the way an admin allows a mirror.
        "K3SD_FETCH_ALLOWED_HOSTS": os.environ.get("K3SD_FETCH_ALLOWED_HOSTS", LAB_ALLOWED_HOSTS),
    }
    proc = spawn_operator(kubeconfig, log_path, port=port, env=env, record_pid=ctx.record_pid)
    try:
        await asyncio.to_thread(wait_live, proc, port, log_path)
        ctx.facts["operator"] = {
            "pid": proc.pid,
            "log": str(log_path),
            "liveness": f"http://127.0.0.1:{port}/healthz",
        }
        ctx.log(f"operator running (pid {proc.pid}, log {log_path})")
        yield
    finally:
        await asyncio.to_thread(processes.stop_group, proc)
