"""Child processes that cannot outlive the lab: own process group, killed with their parent.

Each server runs in a new session (so one ``killpg`` reaches anything it forks) and, on Linux, with
``PR_SET_PDEATHSIG`` so the kernel kills it if the process that spawned it dies without cleaning up
(a test run killed by a timeout, a crashed supervisor). The death signal is tied to the spawning
*thread*: spawn from a thread that lives as long as the child (the main thread, or the event loop).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    prctl: Callable[[int, int], int] = libc.prctl
    return prctl


# Resolved before any fork: loading libraries in a freshly forked child is unsafe.
_PRCTL = _load_prctl()


def require_loopback(host: str) -> str:
    """Lab servers bind to 127.0.0.0/8 only; refuse anything else early and clearly."""
    address = ipaddress.ip_address(host)
    if address.version != 4 or not address.is_loopback:
        raise ValueError(f"lab servers bind to loopback 127.0.0.0/8 only, not {host}")
    return str(address)


def free_ports(host: str = "127.0.0.1", count: int = 1) -> list[int]:
    """``count`` distinct TCP ports the kernel considers free on ``host`` right now."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))  # all held open together, so the kernel hands out distinct ones
            ports.append(s.getsockname()[1])
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel considers free on ``host`` right now."""
    return free_ports(host, 1)[0]


def spawn(
    args: Sequence[str],
    *,
    log_path: Path,
    record_pid: Callable[[int], None] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session with output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent = os.getpid()

    def _die_with_parent() -> None:  # runs in the child between fork and exec
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only prctl: no locks, no allocation-heavy work
            env=env,
        )
    if record_pid is not None:
        record_pid(proc.pid)
    return proc


def stop_group(proc: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it lingers; always reap the child."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure nothing it forked into the group survives it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
