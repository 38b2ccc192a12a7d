"""The detached-job scripts (guest_jobs.py) run by a real ``sh`` with the real ``setsid``: the job
outlives the command that started it, its exit code and log are read later, a second start of the
same job starts nothing, and clean removes its files."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from k3s_deploy.ports.ssh import CommandResult, SshTarget
from k3s_deploy.services.k3scluster import guest_jobs

pytestmark = pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")


class LocalSh:
    """Runs commands with the local sh, the job directory moved under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def run(
        self,
        target: SshTarget,
        command: str,
        *,
        input: str | None = None,
        sudo: bool | None = None,
        timeout_s: float = 60.0,
        check: bool = False,
    ) -> CommandResult:
        local = command.replace(guest_jobs.JOB_DIR, str(self.root / "jobs"))
        done = await asyncio.to_thread(
            subprocess.run, ["sh", "-c", local], input=input or "", capture_output=True, text=True, timeout=30
        )
        return CommandResult(done.returncode, done.stdout, done.stderr, "", "")


async def _until_done(ssh: LocalSh, target: SshTarget, job: str) -> guest_jobs.JobState:
    for _ in range(100):
        state = await guest_jobs.poll(ssh, target, job, timeout_s=5)  # type: ignore[arg-type]
        if not state.running:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError("the job never ended")


async def test_a_detached_job_outlives_its_start_and_reports_its_exit_code(tmp_path: Path) -> None:
    ssh, target = LocalSh(tmp_path), SshTarget(host="127.0.0.1", port=22, user="root", private_key="")
    job = guest_jobs.job_id("upgrade", "n1", "v1.32.0+k3s1")
    assert job == "upgrade-n1-v1.32.0_k3s1"
    script = f"echo working; sleep 1; touch {tmp_path}/ran; echo 'it broke' >&2; exit 7\n"
    assert await guest_jobs.start(ssh, target, job, script, timeout_s=5) == "started"  # type: ignore[arg-type]
    running = await guest_jobs.poll(ssh, target, job, timeout_s=5)  # type: ignore[arg-type]
    assert running.running  # the start returned; the job goes on without it
    assert (tmp_path / "jobs" / f"{job}.sh").stat().st_mode & 0o077 == 0  # root-only: it holds a token
    # started again (an operator that lost its status): nothing new runs
    assert await guest_jobs.start(ssh, target, job, "touch twice\n", timeout_s=5) == "exists"  # type: ignore[arg-type]
    # another job while this one runs: one installer at a time
    other = guest_jobs.job_id("install", "n1", "stable")
    assert await guest_jobs.start(ssh, target, other, "touch other\n", timeout_s=5) == "busy"  # type: ignore[arg-type]
    state = await _until_done(ssh, target, job)
    assert state.rc == 7 and "it broke" in state.tail and "working" in state.tail
    assert (tmp_path / "ran").exists() and not (tmp_path / "twice").exists()
    assert not (tmp_path / "other").exists()
    assert await guest_jobs.start(ssh, target, job, "touch twice\n", timeout_s=5) == "exists"  # type: ignore[arg-type]
    await guest_jobs.clean(ssh, target, job, timeout_s=5)  # type: ignore[arg-type]
    assert list((tmp_path / "jobs").iterdir()) == []
    gone = await guest_jobs.poll(ssh, target, job, timeout_s=5)  # type: ignore[arg-type]
    assert not gone.running and gone.rc is None
