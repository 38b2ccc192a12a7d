"""asyncssh implementation of :class:`~k3s_deploy.ports.ssh.SshRunner` with host-key pinning.

Each call opens its own connection (guests are few and commands are long; no pool to go stale).
The guest's host key is checked in ``validate_host_public_key``: on first contact (no pin) it is
accepted and reported, later only the pinned key is accepted unless the target explicitly relaxes
that. No ``~/.ssh`` file, agent or config of the operator's host is ever consulted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shlex
from pathlib import Path
from typing import Any

import asyncssh

from k3s_deploy import errors, metrics
from k3s_deploy.ports.ssh import CommandResult, SshTarget

log = logging.getLogger(__name__)

_STDERR_TAIL = 400


def fingerprint(key: Any) -> str:
    """OpenSSH-style SHA256 fingerprint of a public key object."""
    return str(key.get_fingerprint("sha256"))


class _PinningClient(asyncssh.SSHClient):
    """Accepts exactly the pinned host key (or any on first contact) and remembers what it saw."""

    def __init__(self, target: SshTarget) -> None:
        self._target = target
        self.presented: str | None = None
        self.mismatch = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        self.presented = fingerprint(key)
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
    ) -> None:
        self._connect_timeout = connect_timeout
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
        conn, client = await self._connect(target)
        try:
            async with conn:
                proc = await conn.run(remote, input=input, check=False, timeout=timeout_s)
        except asyncssh.TimeoutError as exc:
            raise errors.SshUnavailable(
                f"command on {target.describe()} did not finish within {timeout_s:.0f}s", reason="SshTimeout"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise errors.SshUnavailable(f"connection to {target.describe()} dropped: {exc}") from exc
        exit_status = proc.exit_status if proc.exit_status is not None else 255
        result = CommandResult(
            exit_status=exit_status,
            stdout=_text(proc.stdout),
            stderr=_text(proc.stderr),
            host_key=client.presented or "",
        )
        if check and not result.ok:
            tail = result.stderr.strip()[-_STDERR_TAIL:] or result.stdout.strip()[-_STDERR_TAIL:]
            raise errors.CommandFailed(
                f"command on {target.describe()} exited {exit_status}: {tail}", exit_status=exit_status
            )
        return result

    async def fetch(
        self, target: SshTarget, path: str, *, sudo: bool | None = None, timeout_s: float = 30.0
    ) -> bytes:
        use_sudo = target.needs_sudo if sudo is None else sudo
        command = f"cat -- {shlex.quote(path)}"
        remote = _sudo_wrap(command) if use_sudo else command
        conn, _client = await self._connect(target)
        try:
            async with conn:
                proc = await conn.run(remote, check=False, timeout=timeout_s, encoding=None)
        except asyncssh.TimeoutError as exc:
            raise errors.SshUnavailable(f"reading {path} on {target.describe()} timed out") from exc
        except (asyncssh.Error, OSError) as exc:
            raise errors.SshUnavailable(f"connection to {target.describe()} dropped: {exc}") from exc
        if proc.exit_status != 0:
            stderr = (
                proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else str(proc.stderr)
            )
            raise errors.CommandFailed(
                f"cannot read {path} on {target.describe()}: {stderr.strip()[-_STDERR_TAIL:]}",
                exit_status=proc.exit_status,
            )
        data = proc.stdout
        return data if isinstance(data, bytes) else str(data).encode()

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
        conn, _client = await self._connect(target)
        try:
            async with conn:
                # stdin=<path>: asyncssh streams the local file and sends EOF (no copy in memory)
                proc = await conn.run(
                    remote, stdin=str(local_path), check=False, timeout=timeout_s, encoding=None
                )
        except asyncssh.TimeoutError as exc:
            raise errors.SshUnavailable(
                f"copying {remote_path} to {target.describe()} did not finish within {timeout_s:.0f}s",
                reason="SshTimeout",
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise errors.SshUnavailable(f"connection to {target.describe()} dropped: {exc}") from exc
        if proc.exit_status != 0:
            raise errors.CommandFailed(
                f"cannot write {remote_path} on {target.describe()}: {_text(proc.stderr).strip()[-_STDERR_TAIL:]}",
                exit_status=proc.exit_status,
            )

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
                        agent_path=None,
                        config=None,
                        password_auth=False,
                        kbdint_auth=False,
                        gss_auth=False,
                        host_based_auth=False,
                        connect_timeout=self._connect_timeout,
                        login_timeout=self._connect_timeout,
                        keepalive_interval=15,
                    ),
                    timeout=self._connect_timeout * 2,
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


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
