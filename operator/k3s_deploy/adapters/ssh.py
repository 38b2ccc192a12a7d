"""asyncssh implementation of :class:`~k3s_deploy.ports.ssh.SshRunner` with host-key pinning.

Each call opens its own connection (guests are few and commands are long; no pool to go stale).
The guest's host key is checked in ``validate_host_public_key``, during the key exchange and so
before authentication or any command: with a pin only that key is accepted (unless the target
explicitly relaxes it), and only the pinned key's algorithms are offered; on first contact (no pin)
the key is accepted and reported. No ``~/.ssh`` file, agent or config of the operator's host is
ever consulted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from k3s_deploy import errors, metrics
from k3s_deploy.ports.ssh import CommandResult, SshTarget, guest_text

log = logging.getLogger(__name__)

_STDERR_TAIL = 400
_MiB = 1 << 20
# The most the operator reads from one stream of one guest command (stdout and stderr each): a
# kubeconfig, a version line and installer output are kilobytes. K3SD_SSH_MAX_OUTPUT_BYTES changes it.
MAX_OUTPUT_BYTES = _MiB
_CHUNK = 64 * 1024


def fingerprint(key: Any) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key object."""
    return str(key.get_fingerprint("sha256"))


class _PinningClient(asyncssh.SSHClient):
    """Accepts exactly the pinned host key (or any on first contact) and remembers what it saw."""

    def __init__(self, target: SshTarget) -> None:
        self._target = target
        self.presented: str | None = None
        self.presented_line = ""
        self.mismatch = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.presented = fingerprint(key)
        self.presented_line = " ".join(key.export_public_key("openssh").decode().split()[:2])
        pinned = self._target.pinned_host_key
        if pinned is None or pinned == self.presented:
            return True
        if self._target.accept_changed_host_key:
            log.warning(
                "host key of %s changed (%s -> %s); accepted by policy",
                self._target.describe(),
                pinned,
                self.presented,
            )
            return True
        self.mismatch = True
        return False


def _host_key_algs(target: SshTarget) -> dict[str, Any]:
    """Offer only the pinned key's algorithms, so the server presents the key that was read."""
    return {"server_host_key_algs": list(target.host_key_algorithms)} if target.host_key_algorithms else {}


def _sudo_wrap(command: str) -> str:
    return f"sudo -n -- sh -c {shlex.quote(command)}"


class AsyncSshRunner:
    """The operator's SSH client. Connection failures are retried with exponential backoff."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._max_output = max_output_bytes
        # asyncssh logs every connection and command at INFO; the operator reports through status instead.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff

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
        use_sudo = target.needs_sudo if sudo is None else sudo
        remote = _sudo_wrap(command) if use_sudo else command
        out = await self._exec(
            target,
            remote,
            input=input.encode() if input is not None else None,
            timeout_s=timeout_s,
            what="the command's output",
            on_timeout=f"command on {target.describe()} did not finish within {timeout_s:.0f}s",
        )
        result = CommandResult(
            exit_status=out.exit_status,
            stdout=_text(out.stdout),
            stderr=_text(out.stderr),
            host_key=out.host_key,
            host_public_key=out.host_public_key,
        )
        if check and not result.ok:
            tail = result.stderr.strip()[-_STDERR_TAIL:] or result.stdout.strip()[-_STDERR_TAIL:]
            raise errors.CommandFailed(
                f"command on {target.describe()} exited {out.exit_status}: {guest_text(tail)}",
                exit_status=out.exit_status,
            )
        return result

    async def fetch(
        self, target: SshTarget, path: str, *, sudo: bool | None = None, timeout_s: float = 30.0
    ) -> bytes:
        use_sudo = target.needs_sudo if sudo is None else sudo
        command = f"cat -- {shlex.quote(path)}"
        remote = _sudo_wrap(command) if use_sudo else command
        out = await self._exec(
            target,
            remote,
            timeout_s=timeout_s,
            what=path,
            on_timeout=f"reading {path} on {target.describe()} timed out",
        )
        if out.exit_status != 0:
            raise errors.CommandFailed(
                f"cannot read {path} on {target.describe()}: {guest_text(_text(out.stderr).strip()[-_STDERR_TAIL:])}",
                exit_status=out.exit_status,
            )
        return out.stdout

    async def upload(
        self,
        target: SshTarget,
        local_path: Path,
        remote_path: str,
        *,
        mode: int = 0o644,
        sudo: bool | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        use_sudo = target.needs_sudo if sudo is None else sudo
        command = upload_command(remote_path, mode, secrets.token_hex(6))
        remote = _sudo_wrap(command) if use_sudo else command
        # stdin=<path>: asyncssh streams the local file and sends EOF (no copy in memory)
        out = await self._exec(
            target,
            remote,
            stdin_path=str(local_path),
            timeout_s=timeout_s,
            what=f"the output of copying {remote_path}",
            on_timeout=f"copying {remote_path} to {target.describe()} did not finish within {timeout_s:.0f}s",
        )
        if out.exit_status != 0:
            raise errors.CommandFailed(
                f"cannot write {remote_path} on {target.describe()}: "
                f"{guest_text(_text(out.stderr).strip()[-_STDERR_TAIL:])}",
                exit_status=out.exit_status,
            )

    async def _exec(
        self,
        target: SshTarget,
        remote: str,
        *,
        timeout_s: float,
        what: str,
        on_timeout: str,
        input: bytes | None = None,
        stdin_path: str | None = None,
    ) -> _Output:
        """Run ``remote`` on a fresh connection and collect its output, at most ``max_output_bytes``
        per stream: past that the command is closed and ``GuestInputRejected`` raised (a guest that
        answers without end must not grow the operator's memory; reading again would not help)."""
        conn, client = await self._connect(target)
        try:
            async with conn:
                status, stdout, stderr = await asyncio.wait_for(
                    _collect(conn, remote, input, stdin_path, self._max_output), timeout_s
                )
        except _TooMuchOutput as exc:
            raise errors.GuestInputRejected(
                f"{target.describe()} sent more than {_size(self._max_output)} on {exc.stream} while the "
                f"operator read {what}; it stopped reading and closed the command. A guest that answers this "
                "much is broken or hostile: check what runs there",
                reason="GuestOutputTooLarge",
            ) from None
        except TimeoutError as exc:
            raise errors.SshUnavailable(on_timeout, reason="SshTimeout") from exc
        except (asyncssh.Error, OSError) as exc:
            raise errors.SshUnavailable(f"connection to {target.describe()} dropped: {exc}") from exc
        return _Output(status, stdout, stderr, client.presented or "", client.presented_line)

    async def host_key(self, target: SshTarget) -> str:
        conn, client = await self._connect(target)
        async with conn:
            pass
        return client.presented or ""

    async def _connect(self, target: SshTarget) -> tuple[Any, _PinningClient]:
        """Open an authenticated connection (timed as SSH operation ``connect``, retries included)."""
        with metrics.time_ssh("connect"):
            return await self._open(target)

    async def _open(self, target: SshTarget) -> tuple[Any, _PinningClient]:
        """Open an authenticated connection, retrying only failures that may heal by themselves."""
        try:
            key = asyncssh.import_private_key(target.private_key)
        except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
            # Never include the key material: the message only names the problem.
            raise errors.CredentialsError(
                "the SSH private key Secret does not hold a usable unencrypted private key",
                reason="SshKeyInvalid",
            ) from exc
        delay = self._backoff
        last: Exception | None = None
        limit = target.connect_timeout_s or self._connect_timeout
        for attempt in range(1, self._attempts + 1):
            client = _PinningClient(target)
            try:
                conn = await asyncio.wait_for(
                    asyncssh.connect(
                        target.host,
                        port=target.port,
                        username=target.user,
                        client_factory=lambda c=client: c,
                        client_keys=[key],
                        known_hosts=([], [], []),
                        **_host_key_algs(target),
                        agent_path=None,
                        config=None,
                        password_auth=False,
                        kbdint_auth=False,
                        gss_auth=False,
                        host_based_auth=False,
                        connect_timeout=limit,
                        login_timeout=limit,
                        keepalive_interval=15,
                    ),
                    timeout=limit * 2,
                )
                return conn, client
            except asyncssh.HostKeyNotVerifiable as exc:
                if client.mismatch:
                    raise errors.HostKeyMismatch(
                        f"host key of {target.host}:{target.port} changed: pinned {target.pinned_host_key}, "
                        f"presented {client.presented}. If the VM was rebuilt on purpose, relax "
                        "spec.ssh.hostKeyPolicy or clear the node's pinned key; otherwise investigate."
                    ) from exc
                last = exc
            except asyncssh.PermissionDenied as exc:
                raise errors.SshAuthFailed(
                    f"{target.describe()} refused the SSH key: check the private key Secret and the "
                    "authorized keys of the VM's cloud-init user"
                ) from exc
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                last = exc
            if attempt < self._attempts:
                log.debug("ssh %s attempt %d failed: %s", target.describe(), attempt, last)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        raise errors.SshUnavailable(
            f"cannot reach {target.describe()} over SSH after {self._attempts} attempts: "
            f"{type(last).__name__}: {last}"
        )


def upload_command(remote_path: str, mode: int, suffix: str) -> str:
    """Shell that writes stdin to a fresh file next to ``remote_path`` and renames it into place.

    ``set -C`` refuses to write through an existing file or symlink; the rename replaces a running
    binary without "text file busy"; a failed copy leaves nothing behind.
    """
    dest = shlex.quote(remote_path)
    parent = shlex.quote(str(Path(remote_path).parent))
    tmp = shlex.quote(f"{Path(remote_path).parent}/.{Path(remote_path).name}.k3sd-{suffix}")
    return (
        f"set -eu; umask 077; mkdir -p {parent}; trap 'rm -f {tmp}' EXIT; "
        f"set -C; cat > {tmp}; set +C; chmod {mode:04o} {tmp}; mv -f {tmp} {dest}; trap - EXIT"
    )


@dataclass(frozen=True)
class _Output:
    exit_status: int
    stdout: bytes
    stderr: bytes
    host_key: str
    host_public_key: str = ""


class _TooMuchOutput(Exception):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


async def _read_capped(reader: Any, limit: int, stream: str) -> bytes:
    """Read ``reader`` to EOF in chunks; more than ``limit`` bytes raises :class:`_TooMuchOutput`.

    The SSH channel's window stops the guest while nobody reads, so memory stays at ``limit`` plus one
    window whatever the guest sends."""
    data = bytearray()
    while chunk := await reader.read(_CHUNK):
        if len(data) + len(chunk) > limit:
            raise _TooMuchOutput(stream)
        data += chunk
    return bytes(data)


async def _collect(
    conn: Any, remote: str, input: bytes | None, stdin_path: str | None, limit: int
) -> tuple[int, bytes, bytes]:
    """Start ``remote``, feed its stdin, and read stdout and stderr side by side, each capped."""
    proc = await conn.create_process(
        remote, stdin=stdin_path if stdin_path is not None else asyncssh.PIPE, encoding=None
    )
    reads = [
        asyncio.ensure_future(_read_capped(proc.stdout, limit, "stdout")),
        asyncio.ensure_future(_read_capped(proc.stderr, limit, "stderr")),
    ]
    try:
        if stdin_path is None:
            if input:
                proc.stdin.write(input)
            proc.stdin.write_eof()
        stdout, stderr = await asyncio.gather(*reads)
        await proc.wait_closed()
    finally:
        for read in reads:
            read.cancel()
        proc.close()
    status = proc.exit_status
    return (status if status is not None else 255), stdout, stderr


def _size(n: int) -> str:
    return f"{n / _MiB:g} MiB" if n >= _MiB else f"{n} bytes"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
