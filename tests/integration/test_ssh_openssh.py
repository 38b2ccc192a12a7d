"""The operator's SSH adapter against a real OpenSSH server (Debian's sshd) on loopback.

sshd runs with its own config, host key and authorized_keys in a temp dir, on a free 127.0.0.1 port,
allowing only key logins for the current user (root in CI: `PermitRootLogin prohibit-password`).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k3s_deploy import errors
from k3s_deploy.adapters.ssh import AsyncSshRunner
from k3s_deploy.ports.ssh import SshTarget

pytestmark = pytest.mark.integration

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# sshd's compiled-in privilege-separation directory (systemd creates it when the service starts).
PRIVSEP_DIR = Path("/run/sshd")


@dataclass
class Sshd:
    port: int
    user: str
    client_key: str
    host_key_fingerprint: str
    dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)


def _fingerprint(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"sshd exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''!r}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("sshd did not start listening")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        pytest.fail("openssh-server is not installed (./dev setup installs it)")
    d = tmp_path_factory.mktemp("sshd")
    d.chmod(0o700)
    _keygen(d / "host_ed25519")
    _keygen(d / "client")
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = _free_port()
    user = getpass.getuser()
    (d / "sshd_config").write_text(
        f"""ListenAddress 127.0.0.1:{port}
HostKey {d / "host_ed25519"}
PidFile none
AuthorizedKeysFile {d / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers {user}
LogLevel VERBOSE
"""
    )
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=(d / "sshd.log").open("wb"),
    )
    try:
        _wait_port(port, proc)
        yield Sshd(
            port=port,
            user=user,
            client_key=(d / "client").read_text(),
            host_key_fingerprint=_fingerprint(d / "host_ed25519.pub"),
            dir=d,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _target(s: Sshd, **kw: object) -> SshTarget:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": s.port,
        "user": s.user,
        "private_key": s.client_key,
    }
    base.update(kw)
    return SshTarget(**base)  # type: ignore[arg-type]


@pytest.fixture
def runner() -> AsyncSshRunner:
    return AsyncSshRunner(connect_timeout=5.0, attempts=2, backoff=0.1)


async def test_first_contact_reports_the_real_host_key(sshd: Sshd, runner: AsyncSshRunner) -> None:
    observed = await runner.host_key(_target(sshd))
    assert observed == sshd.host_key_fingerprint
    assert observed.startswith("SHA256:")


async def test_pinned_key_runs_commands_with_exit_status_and_streams(
    sshd: Sshd, runner: AsyncSshRunner
) -> None:
    target = _target(sshd, pinned_host_key=sshd.host_key_fingerprint)
    ok = await runner.run(target, "echo out; echo err >&2; id -un")
    assert ok.exit_status == 0 and ok.ok
    assert ok.stdout.split() == ["out", sshd.user]
    assert ok.stderr.strip() == "err"
    assert ok.host_key == sshd.host_key_fingerprint

    failed = await runner.run(target, "echo nope >&2; exit 7")
    assert failed.exit_status == 7 and not failed.ok
    assert failed.stderr.strip() == "nope"

    with pytest.raises(errors.CommandFailed) as info:
        await runner.run(target, "echo broken >&2; exit 3", check=True)
    assert info.value.exit_status == 3
    assert "broken" in str(info.value)


async def test_stdin_and_fetch(sshd: Sshd, runner: AsyncSshRunner) -> None:
    target = _target(sshd, pinned_host_key=sshd.host_key_fingerprint)
    dest = sshd.dir / "written.txt"
    await runner.run(target, f"cat > {dest}", input="line one\nline two\n", check=True)
    assert dest.read_text() == "line one\nline two\n"
    assert await runner.fetch(target, str(dest)) == b"line one\nline two\n"
    with pytest.raises(errors.CommandFailed):
        await runner.fetch(target, str(sshd.dir / "missing"))


async def test_wrong_key_is_refused(sshd: Sshd, runner: AsyncSshRunner, tmp_path: Path) -> None:
    _keygen(tmp_path / "other")
    target = _target(sshd, private_key=(tmp_path / "other").read_text())
    with pytest.raises(errors.SshAuthFailed) as info:
        await runner.run(target, "true")
    assert "refused the SSH key" in str(info.value)
    assert not info.value.transient


async def test_malformed_key_is_a_credentials_error_without_leaking(
    sshd: Sshd, runner: AsyncSshRunner
) -> None:
    secret_text = "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n"
    with pytest.raises(errors.CredentialsError) as info:
        await runner.run(_target(sshd, private_key=secret_text), "true")
    assert "bm90IGEga2V5" not in str(info.value)
    assert "bm90IGEga2V5" not in repr(_target(sshd, private_key=secret_text))


async def test_changed_host_key_is_refused_unless_relaxed(
    sshd: Sshd, runner: AsyncSshRunner, tmp_path: Path
) -> None:
    _keygen(tmp_path / "old_host")
    old = _fingerprint(tmp_path / "old_host.pub")
    assert old != sshd.host_key_fingerprint
    marker = sshd.dir / "should-not-exist"
    with pytest.raises(errors.HostKeyMismatch) as info:
        await runner.run(_target(sshd, pinned_host_key=old), f"touch {marker}")
    message = str(info.value)
    assert old in message and sshd.host_key_fingerprint in message
    assert not marker.exists(), "no command may run on a host whose key changed"

    relaxed = await runner.run(_target(sshd, pinned_host_key=old, accept_changed_host_key=True), "echo hi")
    assert relaxed.stdout.strip() == "hi"
    assert relaxed.host_key == sshd.host_key_fingerprint


async def test_unreachable_port_is_transient_after_retries(runner: AsyncSshRunner) -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(errors.SshUnavailable) as info:
        await runner.run(SshTarget("127.0.0.1", port, "root", private_key=_any_key()), "true")
    assert info.value.transient
    assert "after 2 attempts" in str(info.value)
    assert time.monotonic() - started >= 0.1  # it backed off between attempts


async def test_command_timeout_is_transient(sshd: Sshd, runner: AsyncSshRunner) -> None:
    target = _target(sshd, pinned_host_key=sshd.host_key_fingerprint)
    with pytest.raises(errors.SshUnavailable) as info:
        await runner.run(target, "sleep 5", timeout_s=0.5)
    assert info.value.reason == "SshTimeout"


async def test_parallel_sessions(sshd: Sshd, runner: AsyncSshRunner) -> None:
    target = _target(sshd, pinned_host_key=sshd.host_key_fingerprint)
    results = await asyncio.gather(*(runner.run(target, f"echo {i}") for i in range(5)))
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(5)]


def _any_key() -> str:
    import asyncssh

    return str(asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())


async def test_endless_output_is_cut_at_the_cap_and_the_command_ends(sshd: Sshd, tmp_path: Path) -> None:
    """A guest answering without end (docs/security.md, item 6): the read stops at the cap, the
    command is closed (sshd ends it), and the error is permanent with a reason."""
    runner = AsyncSshRunner(attempts=1, max_output_bytes=256 * 1024)
    target = _target(sshd, pinned_host_key=sshd.host_key_fingerprint)
    pidfile = tmp_path / "yes.pid"
    for command in (
        f"echo $$ > {pidfile}; exec yes 'v1.31.4+k3s1'",
        f"echo $$ > {pidfile}; exec yes error >&2",
    ):
        with pytest.raises(errors.GuestInputRejected) as caught:
            await runner.run(target, command, timeout_s=30)
        assert caught.value.reason == "GuestOutputTooLarge" and not caught.value.transient
        assert "more than 262144 bytes" in caught.value.message
        assert not await asyncio.to_thread(_still_running, pidfile), "the endless command still runs"
    with pytest.raises(errors.GuestInputRejected):
        await runner.fetch(target, "/dev/zero")
    small = await runner.run(target, "head -c 200000 /dev/zero | tr '\\0' a")
    assert len(small.stdout) == 200000


def _still_running(pidfile: Path, timeout: float = 10.0) -> bool:
    """Whether the process in ``pidfile`` is alive after ``timeout`` (a zombie counts as ended)."""
    stat = Path(f"/proc/{int(pidfile.read_text())}/stat")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        except FileNotFoundError:
            return False
        time.sleep(0.1)
    return True
