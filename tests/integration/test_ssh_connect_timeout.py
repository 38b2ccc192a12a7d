"""The asyncssh adapter honours the target's connect timeout (spec.ssh.connectTimeoutSeconds) against
a loopback port that accepts TCP and never sends an SSH banner."""

from __future__ import annotations

import socket
import time

import asyncssh
import pytest

from k3s_deploy import errors
from k3s_deploy.adapters.ssh import AsyncSshRunner
from k3s_deploy.ports.ssh import SshTarget

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_silent_server_fails_after_the_targets_connect_timeout() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes the TCP handshake; nobody ever speaks
        port = server.getsockname()[1]
        runner = AsyncSshRunner(connect_timeout=30.0, attempts=1)  # the default would take 30 s
        target = SshTarget("127.0.0.1", port, "root", private_key=key, connect_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(errors.SshUnavailable):
            await runner.run(target, "true")
        took = time.monotonic() - started
    print(f"\nconnect to a silent SSH port gave up after {took:.2f}s (connectTimeoutSeconds 1)")
    assert 0.9 <= took < 4.0, took
