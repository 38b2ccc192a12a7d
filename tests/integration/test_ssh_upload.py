"""SshRunner.upload (adapters/ssh.py) against a lab guest: sudo for a non-root user, modes, atomic replace."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from fixtures.guests import FakeGuestsEndpoint, lab_net, wait_for_guest
from k3s_deploy import errors
from k3s_deploy.adapters.ssh import AsyncSshRunner
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()


async def test_upload_writes_files_with_mode_through_sudo(
    guests: GuestsService, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    public = client_key.export_public_key().decode()
    await guest_feed.run_vm(531, f"{NET}31", keys=[public], name="up-srv", instance_id="first")
    await wait_for_guest(guests, 531)
    # reads the 2 MiB binary back: above the default cap on what a guest may send
    runner = AsyncSshRunner(connect_timeout=5, attempts=2, backoff=0.1, max_output_bytes=4 << 20)
    target = SshTarget(host=f"{NET}31", port=guests.ssh_port, user="ubuntu",
                       private_key=client_key.export_private_key().decode())  # fmt: skip
    binary = tmp_path / "k3s"
    binary.write_bytes(b"#!/bin/sh\necho 'k3s version v9.9.9+k3s1 (deadbeef)'\n" + bytes(range(256)) * 8192)

    await runner.upload(target, binary, "/usr/local/bin/k3s", mode=0o755)
    result = await runner.run(target, "stat -c %a /usr/local/bin/k3s && k3s | head -n 1", check=True)
    assert result.stdout.splitlines() == ["755", "k3s version v9.9.9+k3s1 (deadbeef)"]
    assert await runner.fetch(target, "/usr/local/bin/k3s") == binary.read_bytes()

    # replaced in place; a new parent directory is created, private (umask 077), and no temp file remains
    binary.write_bytes(b"#!/bin/sh\necho two\n")
    await runner.upload(target, binary, "/usr/local/bin/k3s", mode=0o755)
    await runner.upload(target, binary, "/var/lib/rancher/k3s-deploy/install-x.sh", mode=0o700)
    listing = await runner.run(
        target,
        "k3s; stat -c %a /var/lib/rancher/k3s-deploy /var/lib/rancher/k3s-deploy/install-x.sh; "
        "ls -a /usr/local/bin | grep -c k3sd- || true",
        check=True,
    )
    assert listing.stdout.split() == ["two", "700", "700", "0"]

    # a path nobody can write (procfs): refused as CommandFailed, naming the path
    with pytest.raises(errors.CommandFailed, match="/proc/k3s"):
        await runner.upload(target, binary, "/proc/k3s", mode=0o755)
