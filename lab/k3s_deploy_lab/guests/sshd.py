"""The SSH side of a running lab guest: asyncssh listeners at the guest's addresses, commands in its sandbox.

One listener per guest address on the lab's common guest SSH port. Only the cloud-init user with one of
the cloud-init keys gets in; exec requests and shells run through bubblewrap inside the guest's own
root (real exit codes, stdout, stderr); SFTP is chrooted to the guest's root directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import asyncssh.connection

from k3s_deploy_lab.guests.sandbox import GuestIdentity, GuestRoot

# Client environment variables a stock sshd accepts (AcceptEnv LANG LC_*).
_ACCEPTED_ENV_PREFIXES = ("LANG", "LC_")


@dataclass(frozen=True)
class GuestSpec:
    """A running VM as the simulator reports it (the subset that shapes the guest)."""

    vmid: int
    node: str
    name: str
    instance_id: str
    user: str
    ssh_keys: tuple[str, ...]
    hostname: str
    addresses: tuple[str, ...]
    # lab knob: the SSH server presents keys other than the guest's own (a man in the middle)
    impostor_sshd: bool = False

    @property
    def identity(self) -> GuestIdentity:
        return GuestIdentity(user=self.user, hostname=self.hostname, ssh_keys=self.ssh_keys)


class HostKeyStore:
    """A VM instance's SSH host keys (ed25519 and ecdsa, as a cloud image generates at first boot),
    persisted so a restarted VM keeps them; they go with the instance."""

    # (type as in /etc/ssh/ssh_host_<type>_key, asyncssh algorithm, file suffix in the store)
    KINDS = (("ed25519", "ssh-ed25519", ".key"), ("ecdsa", "ecdsa-sha2-nistp256", ".ecdsa.key"))

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def get(self, instance_id: str) -> dict[str, asyncssh.SSHKey]:
        """The instance's keys by type (``ed25519``, ``ecdsa``), made on first use."""
        out: dict[str, asyncssh.SSHKey] = {}
        for kind, algorithm, suffix in self.KINDS:
            path = self.directory / f"{_safe(instance_id)}{suffix}"
            if path.exists():
                out[kind] = asyncssh.read_private_key(str(path))
                continue
            key = asyncssh.generate_private_key(algorithm)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(key.export_private_key())
            tmp.chmod(0o600)
            tmp.replace(path)
            out[kind] = key
        return out

    @classmethod
    def impostor(cls) -> dict[str, asyncssh.SSHKey]:
        """Fresh keys of the same types: what a man in the middle presents (never persisted)."""
        return {kind: asyncssh.generate_private_key(algorithm) for kind, algorithm, _ in cls.KINDS}

    def forget(self, instance_id: str) -> None:
        for _kind, _algorithm, suffix in self.KINDS:
            (self.directory / f"{_safe(instance_id)}{suffix}").unlink(missing_ok=True)


def install_host_keys(root: GuestRoot, keys: dict[str, asyncssh.SSHKey]) -> None:
    """Write the keys where sshd keeps them (``/etc/ssh/ssh_host_<type>_key`` and ``.pub``)."""
    ssh_dir = root.path("/etc/ssh")
    ssh_dir.mkdir(parents=True, exist_ok=True)
    for kind, key in keys.items():
        private = ssh_dir / f"ssh_host_{kind}_key"
        private.write_bytes(key.export_private_key())
        private.chmod(0o600)
        public = ssh_dir / f"ssh_host_{kind}_key.pub"
        public.write_bytes(key.export_public_key())
        public.chmod(0o644)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class RunningGuest:
    """A guest whose VM runs: its SSH listeners, live connections and processes."""

    spec: GuestSpec
    root: GuestRoot
    # the keys the SSH server presents (the guest's own, or an impostor's)
    host_keys: list[asyncssh.SSHKey]
    extra_ro_binds: dict[str, str] = field(default_factory=dict)
    listeners: list[asyncssh.SSHAcceptor] = field(default_factory=list)
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    processes: set[asyncio.subprocess.Process] = field(default_factory=set)
    # Called as hook(connection, command) when an exec request starts (lab chaos: dropped sessions).
    exec_hooks: list[Callable[[asyncssh.connection.SSHConnection | None, str | None], None]] = field(
        default_factory=list
    )

    def authorized(self) -> list[asyncssh.SSHKey]:
        keys: list[asyncssh.SSHKey] = []
        for line in self.spec.ssh_keys:
            with contextlib.suppress(ValueError, asyncssh.KeyImportError):
                keys.append(asyncssh.import_public_key(line.strip()))
        return keys

    async def start(self, port: int) -> None:
        for address in self.spec.addresses:
            listener = await asyncssh.listen(
                address,
                port,
                server_factory=lambda: _GuestServer(self),
                server_host_keys=self.host_keys,
                process_factory=self._handle,
                sftp_factory=lambda chan: _GuestSftp(chan, self.root.root),
                encoding=None,
                line_editor=False,
                allow_scp=True,
                reuse_address=True,
                login_timeout=30,
            )
            self.listeners.append(listener)

    async def stop(self) -> None:
        """Power off: stop answering, drop sessions, kill every process the guest runs."""
        for listener in self.listeners:
            listener.close()
        for conn in list(self.connections):
            conn.abort()
        for proc in list(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await listener.wait_closed()
        self.listeners.clear()

    async def run(
        self, argv: list[str], *, env: dict[str, str] | None = None, stdio: int = asyncio.subprocess.PIPE
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` inside the guest with pipes (or ``stdio``) on stdin/stdout/stderr."""
        full = self.root.bwrap_argv(self.spec.identity, argv, env=env, extra_ro_binds=self.extra_ro_binds)
        proc = await asyncio.create_subprocess_exec(
            *full, stdin=stdio, stdout=stdio, stderr=stdio, start_new_session=True
        )
        self.processes.add(proc)
        return proc

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command
        if process.subsystem:
            process.stderr.write(f"subsystem request failed: {process.subsystem}\n".encode())
            process.exit(1)
            return
        argv = ["/bin/bash", "-c", command] if command is not None else ["/bin/bash", "-l", "-s"]
        env = {
            k: str(v)
            for k, v in (process.env or {}).items()
            if isinstance(k, str) and k.startswith(_ACCEPTED_ENV_PREFIXES)
        }
        proc = await self.run(argv, env=env)
        for hook in self.exec_hooks:
            hook(process.channel.get_connection(), command)
        try:
            assert proc.stdin and proc.stdout and proc.stderr
            pumps = [
                asyncio.create_task(_pump_in(process.stdin, proc.stdin)),
                asyncio.create_task(_pump_out(proc.stdout, process.stdout)),
                asyncio.create_task(_pump_out(proc.stderr, process.stderr)),
            ]
            waiter = asyncio.create_task(proc.wait())
            # As sshd: the client closing the channel ends the command (a pump fails), like SIGPIPE.
            await asyncio.wait([waiter, *pumps[1:]], return_when=asyncio.FIRST_EXCEPTION)
            failed = [p for p in pumps[1:] if p.done() and p.exception() is not None]
            if failed:
                waiter.cancel()
                pumps[0].cancel()
                raise failed[0].exception()  # type: ignore[misc]
            code = waiter.result()
            pumps[0].cancel()
            process.exit(code if code >= 0 else 128 - code)
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        finally:
            self.processes.discard(proc)


async def _pump_in(reader: asyncssh.SSHReader[bytes], writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (BrokenPipeError, ConnectionError, asyncssh.Error):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _pump_out(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
    """Copy the command's output to the channel at the pace the client reads it (flow control);
    raises once the channel is closed."""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        writer.write(data)
        await writer.drain()


class _GuestSftp(asyncssh.SFTPServer):
    """SFTP chrooted to the guest's root; like sshd it reports exit status 0 when the session ends
    (OpenSSH's scp, which speaks SFTP, counts a missing exit status as a failure)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], root: Path) -> None:
        super().__init__(chan, chroot=bytes(root))

    def exit(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.exit(0)


class _GuestServer(asyncssh.SSHServer):
    """Authentication as cloud-init configured it: one user, its public keys, nothing else."""

    def __init__(self, guest: RunningGuest) -> None:
        self._guest = guest
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._guest.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._guest.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if username != self._guest.spec.user:
            return False
        wanted = key.public_data
        return any(k.public_data == wanted for k in self._guest.authorized())
