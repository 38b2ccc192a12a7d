"""The SSH seam: run commands on a guest, read and write files there, and learn its host key.

Services talk to guests only through :class:`SshRunner`, so unit tests use a fake and the asyncssh
adapter stays the one place that knows about SSH. Host keys are identified by their OpenSSH SHA256
fingerprint (``SHA256:...``), which is what status records and what users compare with ``ssh-keygen -l``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Anything but printable text: C0/C1 controls (newline, escape, NUL, ...), DEL, and the Unicode
# line/paragraph separators and bidi overrides that can make a message read differently than it is.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")
GUEST_TEXT_LIMIT = 600


def guest_text(text: str, limit: int = GUEST_TEXT_LIMIT) -> str:
    """Output of a guest made fit to quote in a condition, Event or log: each run of control
    characters becomes one space, and only the last ``limit`` characters are kept (an installer says
    what went wrong last)."""
    flat = _UNPRINTABLE.sub(" ", text).strip()
    return flat if len(flat) <= limit else "..." + flat[-(limit - 3) :]


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in. The private key is kept out of ``repr`` so it can never be logged."""

    host: str
    port: int
    user: str
    private_key: str = field(repr=False)
    # The fingerprint the server must present (read through the guest agent, pinned in the host-keys
    # Secret, or given in spec.ssh.knownHosts); None means first contact (trust on first use).
    pinned_host_key: str | None = None
    # When True a changed host key is accepted (and re-pinned by the caller); off by default.
    accept_changed_host_key: bool = False
    # Time limit for the TCP connect and the SSH handshake and login (spec.ssh.connectTimeoutSeconds);
    # None: the runner's default.
    connect_timeout_s: float | None = None
    # Host key algorithms to offer (the pinned key's type), so the server presents that key; empty: any.
    host_key_algorithms: tuple[str, ...] = ()

    @property
    def needs_sudo(self) -> bool:
        return self.user != "root"

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did, plus the host key the guest presented for this connection."""

    exit_status: int
    stdout: str
    stderr: str
    host_key: str
    # The presented key as an OpenSSH public key line (``ssh-ed25519 AAAA...``), what a pin stores.
    host_public_key: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class SshRunner(Protocol):
    """Run things on guests. Errors are from :mod:`k3s_deploy.errors`.

    - unreachable / timed out / dropped: ``SshUnavailable`` (after the adapter's own retries)
    - key refused: ``SshAuthFailed``; malformed key: ``CredentialsError``
    - host key differs from ``target.pinned_host_key`` and not accepted: ``HostKeyMismatch``
    - ``check=True`` and a non-zero exit: ``CommandFailed``
    """

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
        """Run ``command`` through the login shell; ``sudo=None`` means sudo when the user is not root."""
        ...

    async def fetch(
        self, target: SshTarget, path: str, *, sudo: bool | None = None, timeout_s: float = 30.0
    ) -> bytes:
        """Read a remote file (through sudo when needed); a missing file raises ``CommandFailed``."""
        ...

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
        """Copy a local file to ``remote_path`` (created with ``mode``, replaced atomically, parent
        directories created; through sudo when needed). A refusal raises ``CommandFailed``."""
        ...

    async def host_key(self, target: SshTarget) -> str:
        """Connect, verify the host key against the pin, log in, and return the presented fingerprint."""
        ...
