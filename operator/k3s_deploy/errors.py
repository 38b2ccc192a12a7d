"""One error tree for the whole operator.

Every failure that crosses a port is raised as one of these, so handlers can decide with a single
``isinstance`` whether to retry with backoff (transient) or to stall with a reason (permanent)::

    K3sDeployError
    ├── TransientError                  retry with backoff; the world may fix itself
    │   ├── ProxmoxUnavailable          connection refused/reset, timeout, 5xx, 595/596
    │   ├── ProxmoxBusy                 VM locked, task still running, vmid race lost
    │   ├── KubeUnavailable             management or target apiserver not answering
    │   ├── SshUnavailable              connect/auth timeout, connection dropped mid-command
    │   ├── GuestNotReady               guest agent silent, no address yet, node not Ready yet
    │   └── ArtefactUnavailable         an air-gap download by the operator failed (network, 5xx)
    └── PermanentError                  stall with a reason until the spec or the world changes
        ├── InvalidSpec                 valid for the schema, wrong for the world
        ├── CredentialsError            Secret missing/malformed, auth refused (401)
        ├── ProxmoxPermissionDenied     token lacks a privilege (403)
        ├── ProxmoxNotFound             template/VM/node/storage does not exist
        ├── ProxmoxRejected             Proxmox refused the request (400, most sync 500s)
        ├── ProxmoxTaskFailed           a task ended with an error exit status
        ├── SshAuthFailed               the guest refused our key
        ├── HostKeyMismatch             the guest's host key changed since it was pinned
        ├── HostKeyUnavailable          the host key cannot be read through the guest agent
        │   └── HostKeyNotGenerated     no key file yet (cloud-init makes them at first boot)
        ├── GuestFileUnreadable         the guest agent could not read a file (missing, no agent)
        ├── CommandFailed               a remote command exited non-zero
        ├── K3sInstallFailed            the K3s installer refused (bad token, bad version, ...)
        ├── GuestInputRejected          a guest sent what the operator will not use (tampered
        │                               kubeconfig, endless output, a malformed version)
        ├── ArtefactRejected            an air-gap URL answered 4xx, too large, wrong checksum
        └── AddressRefused              a URL leads to loopback, private, link-local or metadata addresses

``reason`` is the CamelCase condition reason the error surfaces as; the message says what to fix.

Beside the tree, :class:`NotYet` is the one "not yet" signal (work in flight, not an error) and
:func:`backoff` the one backoff policy every retry loop applies.
"""

from __future__ import annotations


class K3sDeployError(Exception):
    """Base of every error the operator raises on purpose."""

    reason: str = "Error"
    transient: bool = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message


class TransientError(K3sDeployError):
    """Retry later with backoff."""

    reason = "Retrying"
    transient = True

    def __init__(self, message: str, *, reason: str | None = None, delay: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay


class ProxmoxUnavailable(TransientError):
    reason = "ProxmoxUnavailable"


class ProxmoxBusy(TransientError):
    reason = "ProxmoxBusy"


class KubeUnavailable(TransientError):
    reason = "KubernetesUnavailable"


class SshUnavailable(TransientError):
    reason = "SshUnavailable"


class GuestNotReady(TransientError):
    reason = "GuestNotReady"


class PermanentError(K3sDeployError):
    """Stall with a reason; retrying without a change would only repeat the failure."""

    reason = "Failed"


class InvalidSpec(PermanentError):
    reason = "InvalidSpec"


class CredentialsError(PermanentError):
    reason = "CredentialsInvalid"


class ProxmoxPermissionDenied(PermanentError):
    reason = "ProxmoxPermissionDenied"


class ProxmoxNotFound(PermanentError):
    reason = "ProxmoxNotFound"


class ProxmoxRejected(PermanentError):
    reason = "ProxmoxRejected"


class ProxmoxTaskFailed(PermanentError):
    reason = "ProxmoxTaskFailed"


class SshAuthFailed(PermanentError):
    reason = "SshAuthFailed"


class HostKeyMismatch(PermanentError):
    reason = "HostKeyChanged"


class HostKeyUnavailable(PermanentError):
    """The node's SSH host key could not be learned out of band, so no connection is trusted."""

    reason = "HostKeyUnavailable"


class HostKeyNotGenerated(HostKeyUnavailable):
    """The guest agent answers but no host key file exists: for a VM that has just booted, cloud-init
    may not have generated them yet (see services/k3scluster/settling.py); later, it is for good."""


class GuestFileUnreadable(PermanentError):
    """``agent/file-read`` failed for good: no such file, or no guest agent configured."""

    reason = "GuestFileUnreadable"


class CommandFailed(PermanentError):
    reason = "CommandFailed"

    def __init__(self, message: str, *, exit_status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.exit_status = exit_status


class K3sInstallFailed(PermanentError):
    reason = "K3sInstallFailed"


class GuestInputRejected(PermanentError):
    """Something read from a guest is refused (docs/security.md, items 1 and 6): root on a guest may
    be hostile, and retrying reads the same thing again. Reasons: ``KubeconfigRejected``,
    ``GuestOutputTooLarge``, ``GuestValueInvalid``."""

    reason = "GuestInputRejected"


class ArtefactUnavailable(TransientError):
    """An air-gap artefact the operator downloads could not be fetched (network, 5xx)."""

    reason = "ArtefactUnavailable"


class ArtefactRejected(PermanentError):
    """An air-gap artefact URL answered 4xx, or the file is too large or fails its checksum."""

    reason = "ArtefactRejected"


class AddressRefused(PermanentError):
    """A URL (or a redirect, or what its name resolves to) points where the operator must not connect:
    loopback, private, link-local or metadata addresses (k3s_deploy/netpolicy.py). The reason names the
    rule, such as ``LoopbackAddressRefused``."""

    reason = "AddressRefused"


class NotYet(Exception):
    """End the pass here: something is on its way (a task, a boot, a child finishing its deletion).

    Not a :class:`K3sDeployError`: nothing failed, so no backoff and no Warning. ``after_s`` is when to
    look again (None: at the next periodic resync); ``reason``/``message`` feed ``Reconciling``.
    """

    def __init__(self, after_s: float | None, reason: str = "Waiting", message: str = "") -> None:
        super().__init__(message or reason)
        self.after_s = after_s
        self.reason = reason
        self.message = message


def backoff(failures: int, cap: float, *, first: float = 5.0) -> float:
    """Seconds to wait after ``failures`` failures in a row: ``first``, twice that, ... at most ``cap``."""
    return float(min(first * 2 ** (max(failures, 1) - 1), cap))
