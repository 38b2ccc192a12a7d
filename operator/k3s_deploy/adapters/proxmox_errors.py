"""How proxmoxer's failures map onto the operator's error tree (used by adapters/proxmox.py only)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import requests
from proxmoxer.core import AuthenticationError, ResourceException

from k3s_deploy.errors import (
    CredentialsError,
    K3sDeployError,
    ProxmoxBusy,
    ProxmoxNotFound,
    ProxmoxPermissionDenied,
    ProxmoxRejected,
    ProxmoxUnavailable,
)

# Sync 500s that mean "the request is wrong", not "the server is unwell" (pve-api-facts.md §3, §6).
_REJECTIONS = re.compile(
    r"can't |cannot |protection mode|no options specified|validation error|not supported|invalid|"
    r"not a template|you can't|only possible|not allowed",
    re.IGNORECASE,
)
AGENT_SILENT = re.compile(r"guest agent|not running|agent error", re.IGNORECASE)


_MAX_ANSWER = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _bounded(text: str) -> str:
    """What a server said, fit for a condition message: one line, at most ``_MAX_ANSWER`` characters.
    The Proxmox url comes from a tenant's Secret, so the answer may come from anything it points at."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= _MAX_ANSWER else text[: _MAX_ANSWER - 1] + "…"


def _error_text(exc: ResourceException) -> str:
    text = str(exc.content or exc.status_message or "").strip()
    if exc.errors:
        details = exc.errors if isinstance(exc.errors, Mapping) else {"": exc.errors}
        text += (
            " ("
            + "; ".join(f"{k}: {str(v).strip()}" if k else str(v).strip() for k, v in details.items())
            + ")"
        )
    return _bounded(text)


def map_resource_error(exc: ResourceException, what: str) -> K3sDeployError:
    """Turn an HTTP error answer of PVE into the operator's error tree."""
    code = int(exc.status_code)
    text = _error_text(exc)
    message = f"{what}: {code} {text}"
    lowered = text.lower()
    if code == 401:
        return CredentialsError(
            f"{what}: Proxmox refused the credentials (401 {text}); check tokenId/tokenSecret or "
            "username/password in the credentials Secret"
        )
    if code == 403:
        return ProxmoxPermissionDenied(f"{what}: {text}; grant the token the missing privilege")
    if "already exists" in lowered:
        return ProxmoxBusy(message, reason="VmidTaken")
    if "locked" in lowered or "checksum mismatch" in lowered or "can't lock file" in lowered:
        return ProxmoxBusy(message)
    if "does not exist" in lowered or code == 404:
        return ProxmoxNotFound(message)
    if code == 400 or code == 501:
        return ProxmoxRejected(message)
    if code == 500 and _REJECTIONS.search(text):
        return ProxmoxRejected(message)
    return ProxmoxUnavailable(message)


def map_exception(exc: BaseException, what: str) -> K3sDeployError:
    """Map anything a proxmoxer call can raise."""
    if isinstance(exc, K3sDeployError):
        return exc
    if isinstance(exc, ResourceException):
        return map_resource_error(exc, what)
    if isinstance(exc, AuthenticationError):
        return CredentialsError(
            f"{what}: {_bounded(str(exc))}; check username/password in the credentials Secret"
        )
    if isinstance(exc, requests.exceptions.SSLError):
        if "fingerprint" in str(exc).lower():  # urllib3's assert_fingerprint: a pin was set and differs
            fix = (
                "the server's certificate does not match the pinned SHA-256 in the Secret key fingerprint; "
                "if the certificate was renewed on purpose, pin the new one"
            )
        else:
            fix = "put the server's CA certificate into the Secret key caCert, or pin its SHA-256 in fingerprint"
        return CredentialsError(
            f"{what}: TLS verification of the Proxmox server failed ({type(exc).__name__}); {fix}",
            reason="TLSVerificationFailed",
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return ProxmoxUnavailable(f"{what}: {type(exc).__name__}: {_bounded(str(exc))}")
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return ProxmoxUnavailable(f"{what}: unexpected answer ({type(exc).__name__}: {_bounded(str(exc))})")
    return ProxmoxUnavailable(f"{what}: {type(exc).__name__}: {_bounded(str(exc))}")
