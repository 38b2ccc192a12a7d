"""Lab children leave no orphans: group kill on stop, kernel kill when their parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from k3s_deploy_lab.controlplane import processes

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def test_stop_group_kills_what_the_child_forked(tmp_path: Path) -> None:
    recorded: list[int] = []
    proc = processes.spawn(
        ["sh", "-c", "sleep 300 & exec sleep 301"], log_path=tmp_path / "x.log", record_pid=recorded.append
    )
    assert recorded == [proc.pid]
    assert os.getpgid(proc.pid) == proc.pid  # its own process group
    deadline = time.monotonic() + 5
    while not (grandchildren := _children_of(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    # `sleep 300 &` was reparented or is still the shell's child; either way it is in the group.
    group = [
        p for p in (int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()) if _pgid(p) == proc.pid
    ]
    assert len(group) == 2, (group, grandchildren)
    processes.stop_group(proc, timeout=5)
    assert _wait_gone(group)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from k3s_deploy_lab.controlplane import processes
        proc = processes.spawn(["sleep", "300"], log_path=Path({str(tmp_path / "c.log")!r}))
        print(proc.pid, flush=True)
        time.sleep(300)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
    parent.wait()
    assert _wait_gone([child]), "the child outlived its SIGKILLed parent"
