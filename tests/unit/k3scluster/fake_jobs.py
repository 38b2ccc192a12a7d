"""Detached guest jobs (services/k3scluster/guest_jobs.py) in the fake SSH: a started job runs its
script as the fake's ``sh -s`` would, at once or, while ``hold_jobs`` is set, at the first poll after
it is cleared (an exit code arriving on a later pass). Unit tests only."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from k3s_deploy.ports.ssh import CommandResult, SshTarget
from k3s_deploy.services.k3scluster import guest_jobs as gj

if TYPE_CHECKING:
    from .fakes import FakeHost, FakeSsh

PREFIXES = (gj.START_PREFIX, gj.POLL_PREFIX, gj.CLEAN_PREFIX)


@dataclass
class FakeJob:
    script: str
    result: CommandResult | None = None


async def handle(
    ssh: FakeSsh, target: SshTarget, host: FakeHost, command: str, input: str | None
) -> CommandResult:
    job = shlex.split(command)[-1]
    if command.startswith(gj.START_PREFIX):
        if job in host.jobs:
            return host.result(0, gj.EXISTS + "\n")
        if any(other.result is None for other in host.jobs.values()):
            return host.result(0, gj.BUSY + "\n")  # one installer at a time
        ssh.job_starts.append((target.host, job))
        host.jobs[job] = FakeJob(input or "")
        if not ssh.hold_jobs:
            await _run(ssh, target, host.jobs[job])
        return host.result(0, gj.STARTED + "\n")
    if command.startswith(gj.POLL_PREFIX):
        found = host.jobs.get(job)
        if found is None:
            return host.result(0, gj.ABSENT + "\n")
        if found.result is None:
            if ssh.hold_jobs:
                return host.result(0, gj.RUNNING + "\n")
            await _run(ssh, target, found)
        assert found.result is not None
        said = found.result.stderr or found.result.stdout
        return host.result(0, f"{gj.RC}{found.result.exit_status}\n{said}\n")
    host.jobs.pop(job, None)
    return host.result(0)


async def _run(ssh: FakeSsh, target: SshTarget, job: FakeJob) -> None:
    try:
        job.result = await ssh.run(target, "sh -s", input=job.script)
    except RuntimeError:  # the operator killed right after the script ran: the job itself ended well
        job.result = CommandResult(0, "[INFO] done", "", "", "")
        raise
