"""Long commands run detached on a guest: started in one pass, their exit code read in a later one.

``start`` copies the script (sent on stdin, so a token in it stays off every command line) to a
root-only file and runs it under ``setsid -f``, so it outlives the SSH session and the operator;
the wrapper writes the exit code to ``<id>.rc`` when the script ends. A job id names the work, not
the attempt: starting an id whose script or exit code is still on the guest starts nothing, so an
operator that lost its status (or crashed between the start and recording it) never runs the same
installer twice at once; while any job's script is on the guest no other starts (``busy``). ``clean``
removes the files once the exit code is consumed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Literal

from k3s_deploy import errors
from k3s_deploy.ports.ssh import SshRunner, SshTarget, guest_text

JOB_DIR = "/var/lib/k3s-deploy/jobs"
STARTED, EXISTS, BUSY = "k3s-deploy:job-started", "k3s-deploy:job-exists", "k3s-deploy:job-busy"
RUNNING, ABSENT, RC = "k3s-deploy:job-running", "k3s-deploy:job-absent", "k3s-deploy:job-rc="
_RUN = 'sh "$1.sh" >"$1.log" 2>&1; echo $? >"$1.rc.tmp"; mv "$1.rc.tmp" "$1.rc"; rm -f "$1.sh"'
_START = (
    f'set -eu; umask 077; d={JOB_DIR}; mkdir -p "$d"; '
    f'if [ -e "$d/$1.sh" ] || [ -e "$d/$1.rc" ]; then cat >/dev/null; echo {EXISTS}; exit 0; fi; '
    f'for f in "$d"/*.sh; do if [ -e "$f" ]; then cat >/dev/null; echo {BUSY}; exit 0; fi; done; '
    'cat >"$d/$1.sh.tmp"; mv "$d/$1.sh.tmp" "$d/$1.sh"; '
    f'setsid -f sh -c {shlex.quote(_RUN)} job "$d/$1" </dev/null >/dev/null 2>&1; echo {STARTED}'
)
_POLL = (
    f'd={JOB_DIR}; if [ -e "$d/$1.rc" ]; then echo "{RC}$(cat "$d/$1.rc")"; tail -n 5 "$d/$1.log"; '
    f'elif [ -e "$d/$1.sh" ]; then echo {RUNNING}; else echo {ABSENT}; fi'
)
_CLEAN = f'rm -f "{JOB_DIR}/$1".sh "{JOB_DIR}/$1".rc "{JOB_DIR}/$1".log'
START_PREFIX = f"sh -c {shlex.quote(_START)} start "
POLL_PREFIX = f"sh -c {shlex.quote(_POLL)} poll "
CLEAN_PREFIX = f"sh -c {shlex.quote(_CLEAN)} clean "


Started = Literal["started", "exists", "busy"]


@dataclass(frozen=True)
class JobState:
    """``running``; else done with ``rc`` (None: no such job on the guest) and the log's last lines."""

    running: bool
    rc: int | None = None
    tail: str = ""


def job_id(*parts: str) -> str:
    """A file-name-safe id from what the job does (e.g. upgrade + version)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))[:100]


async def start(ssh: SshRunner, target: SshTarget, job: str, script: str, *, timeout_s: float) -> Started:
    """Start ``script`` detached as ``job``: ``started``; ``exists`` when that job is there already,
    ``busy`` while another job runs on the guest (one installer at a time): nothing started."""
    result = await ssh.run(target, START_PREFIX + shlex.quote(job), input=script, timeout_s=timeout_s)
    for word, said in (("started", STARTED), ("exists", EXISTS), ("busy", BUSY)):
        if result.ok and said in result.stdout:
            return word  # type: ignore[return-value]  # one of the three literals
    raise errors.CommandFailed(
        f"could not start {job} (exit {result.exit_status}): {guest_text(result.stderr, 300)}",
        exit_status=result.exit_status,
    )


async def poll(ssh: SshRunner, target: SshTarget, job: str, *, timeout_s: float) -> JobState:
    result = await ssh.run(target, POLL_PREFIX + shlex.quote(job), timeout_s=timeout_s)
    out = result.stdout
    if RUNNING in out:
        return JobState(True)
    if RC not in out:
        return JobState(False)
    first, _, rest = out.partition(RC)[2].partition("\n")
    try:
        rc = int(first.strip())
    except ValueError:
        rc = 255
    tail = " | ".join(line.strip() for line in rest.splitlines() if line.strip())
    return JobState(False, rc, guest_text(tail, 600))


async def clean(ssh: SshRunner, target: SshTarget, job: str, *, timeout_s: float) -> None:
    await ssh.run(target, CLEAN_PREFIX + shlex.quote(job), timeout_s=timeout_s)
