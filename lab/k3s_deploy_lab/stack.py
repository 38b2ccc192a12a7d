"""The lab supervisor: starts the chosen components in order, records what runs, tears it all down.

`lab up` runs `serve` in the foreground, or spawns it as a detached process and waits for DIR/ready.
Each component is an async context manager factory registered in ``COMPONENTS``; entering it starts
the component and publishes what others need on the shared :class:`LabContext`, leaving it stops it.
`lab down` signals the supervisor (pid in DIR/supervisor.pid) and then kills any process still listed
in DIR/pids as a last resort, so nothing is left behind even after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3s_deploy_lab import leases

ORDER = ("controlplane", "pve", "guests", "operator", "cluster")

# name -> "module:callable"; the callable takes a LabContext and returns an async context manager.
COMPONENTS: dict[str, str] = {
    "controlplane": "k3s_deploy_lab.controlplane.component:lab_component",
    "pve": "k3s_deploy_lab.pvesim.component:lab_component",
    "guests": "k3s_deploy_lab.guests.component:lab_component",
    "operator": "k3s_deploy_lab.operator_component:lab_component",
    "cluster": "k3s_deploy_lab.sample_cluster:lab_component",
}

READY_FILE = "ready"
FAILED_FILE = "failed"
PID_FILE = "supervisor.pid"
PIDS_FILE = "pids"


@dataclass
class LabContext:
    """What components share: the lab directory, the management kubeconfig, and published facts."""

    dir: Path
    components: tuple[str, ...]
    kubeconfig: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    block: str | None = None  # the loopback block this lab's guests get their addresses from

    def log(self, message: str) -> None:
        print(f"[lab] {message}", flush=True)

    def record_pid(self, pid: int) -> None:
        """Remember a child so `lab down` can kill it even if the supervisor died."""
        with (self.dir / PIDS_FILE).open("a") as f:
            f.write(f"{pid}\n")


def parse_components(text: str) -> tuple[str, ...]:
    """Turn 'pve,controlplane' into the components in start order; 'all' means every one."""
    if text.strip() in ("", "all"):
        return ORDER
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = wanted - set(ORDER)
    if unknown:
        raise SystemExit(
            f"unknown lab component(s): {', '.join(sorted(unknown))}; choose from {', '.join(ORDER)}"
        )
    return tuple(name for name in ORDER if name in wanted)


def _factory(name: str) -> Callable[[LabContext], AbstractAsyncContextManager[None]]:
    module_name, attr = COMPONENTS[name].split(":")
    factory: Callable[[LabContext], AbstractAsyncContextManager[None]] = getattr(
        importlib.import_module(module_name), attr
    )
    return factory


@contextlib.asynccontextmanager
async def running(ctx: LabContext) -> AsyncIterator[LabContext]:
    """Start every component of ``ctx`` in order; stop them in reverse on exit (also used by tests)."""
    async with contextlib.AsyncExitStack() as stack:
        for name in ctx.components:
            ctx.log(f"starting {name}")
            await stack.enter_async_context(_factory(name)(ctx))
        yield ctx


async def _serve(ctx: LabContext) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running(ctx):
            _link_kubectl(ctx.dir)
            (ctx.dir / "facts.json").write_text(json.dumps(ctx.facts, indent=2, default=str))
            (ctx.dir / READY_FILE).write_text(str(os.getpid()))
            ctx.log(
                f"ready; facts in {ctx.dir / 'facts.json'}; stop with `k3s-deploy lab down --dir {ctx.dir}`"
            )
            await stop.wait()
            ctx.log("stopping")
    except BaseException as exc:
        (ctx.dir / FAILED_FILE).write_text(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        (ctx.dir / READY_FILE).unlink(missing_ok=True)


def serve(
    directory: Path, components: tuple[str, ...], *, kubeconfig: Path | None = None, block: str | None = None
) -> int:
    """Run the supervisor in this process until SIGTERM/SIGINT."""
    directory = directory.resolve()
    if _alive(_read_pid(directory / PID_FILE)) and _read_pid(directory / PID_FILE) != os.getpid():
        print(
            f"a lab already runs in {directory}; `k3s-deploy lab down --dir {directory}` first",
            file=sys.stderr,
        )
        return 1
    try:
        lease = leases.claim(directory, components, block)
    except leases.BlockTaken as exc:
        print(f"[lab] not starting: {exc}", file=sys.stderr, flush=True)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    for stale in (READY_FILE, FAILED_FILE):
        (directory / stale).unlink(missing_ok=True)
    (directory / PID_FILE).write_text(str(os.getpid()))
    ctx = LabContext(
        dir=directory,
        components=components,
        kubeconfig=kubeconfig.resolve() if kubeconfig else None,
        block=str(lease.network) if lease else None,
    )
    try:
        asyncio.run(_serve(ctx))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        print(f"[lab] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        (directory / PID_FILE).unlink(missing_ok=True)
        if lease is not None:
            lease.release()
    return 0


def up(
    directory: Path,
    components: tuple[str, ...],
    *,
    kubeconfig: Path | None = None,
    detach: bool = False,
    timeout: float = 3600.0,
    block: str | None = None,
) -> int:
    """Start the lab; with ``detach`` return once it is ready (its log is DIR/lab.log)."""
    if not detach:
        return serve(directory, components, kubeconfig=kubeconfig, block=block)
    directory = directory.resolve()
    if _alive(_read_pid(directory / PID_FILE)):
        print(
            f"a lab already runs in {directory}; `k3s-deploy lab down --dir {directory}` first",
            file=sys.stderr,
        )
        return 1
    try:  # refuse here, before anything starts, with the reason on the terminal
        lease = leases.claim(directory, components, block)
    except leases.BlockTaken as exc:
        print(f"lab up: not starting: {exc}", file=sys.stderr)
        return 1
    if lease is not None:
        block = str(lease.network)
        lease.release()  # the supervisor leases it again for its lifetime
    directory.mkdir(parents=True, exist_ok=True)
    for stale in (READY_FILE, FAILED_FILE):
        (directory / stale).unlink(missing_ok=True)
    args = [
        sys.executable,
        "-m",
        "k3s_deploy",
        "lab",
        "serve",
        "--dir",
        str(directory),
        "--components",
        ",".join(components),
    ]
    if kubeconfig is not None:
        args += ["--kubeconfig", str(kubeconfig.resolve())]
    if block is not None:
        args += ["--block", block]
    log = (directory / "lab.log").open("ab")
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (directory / READY_FILE).exists():
            print(f"lab ready in {directory} (log: {directory / 'lab.log'})")
            _print_summary(directory)
            return 0
        if proc.poll() is not None or (directory / FAILED_FILE).exists():
            print(f"lab failed to start; see {directory / 'lab.log'}", file=sys.stderr)
            _print_tail(directory / "lab.log")
            down(directory)
            return 1
        time.sleep(0.2)
    print("lab did not become ready in time", file=sys.stderr)
    down(directory)
    return 1


def down(directory: Path, *, timeout: float = 60.0) -> int:
    """Stop the supervisor gracefully, then kill whatever it recorded and is still alive."""
    directory = directory.resolve()
    pid = _read_pid(directory / PID_FILE)
    if _alive(pid):
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pids_file = directory / PIDS_FILE
    if pids_file.exists():
        for line in pids_file.read_text().split():
            child = int(line)
            if _alive(child):
                with contextlib.suppress(ProcessLookupError):
                    if _is_group_leader(child):
                        os.killpg(child, signal.SIGKILL)
                    else:
                        os.kill(child, signal.SIGKILL)
        pids_file.unlink()
    for name in (PID_FILE, READY_FILE):
        (directory / name).unlink(missing_ok=True)
    print(f"lab in {directory} is down")
    return 0


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _print_tail(path: Path, lines: int = 30) -> None:
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            print(f"  {line}", file=sys.stderr)


def _print_summary(directory: Path) -> None:
    """Show what the components published as a human summary (the sample cluster's, for one)."""
    with contextlib.suppress(OSError, ValueError):
        facts = json.loads((directory / "facts.json").read_text())
        summary = facts.get("cluster", {}).get("summary")
        if summary:
            print(Path(summary).read_text(), end="")


def _link_kubectl(directory: Path) -> None:
    """Put the lab's kubectl at DIR/bin/kubectl, so users need no kubectl of their own."""
    from k3s_deploy_lab.controlplane.build import cached_binaries

    binaries = cached_binaries()
    if binaries is None:
        return
    link = directory / "bin" / "kubectl"
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(binaries["kubectl"])
