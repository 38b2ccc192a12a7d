"""The HTTP session behind the Proxmox client: TLS trust, the address rule, and the ticket login.

proxmoxer's own password login posts ``/access/ticket`` with a bare ``requests.post`` (a session of
its own, environment proxies, ``verify=False`` when a fingerprint is pinned), at start and at every
renewal. Here the login, its renewals and every API call go through ONE session, so a pinned
fingerprint is checked on each connection before any byte of a request (or a password) is sent.
A pinned session also ignores proxy settings from the environment: the pin is the trust, and
connections go straight to the address that was checked.

Every connection first resolves the Proxmox host once, refuses link-local and metadata addresses
(loopback and private ones are fine: Proxmox usually has one) and connects to the checked address.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from proxmoxer.backends.https import (
    JsonSerializer,
    ProxmoxHTTPApiTokenAuth,
    ProxmoxHTTPAuth,
    ProxmoxHTTPAuthBase,
    ProxmoxHttpSession,
)
from proxmoxer.core import AuthenticationError, ProxmoxResource
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from k3s_deploy.netpolicy import AddressPolicy
from k3s_deploy.ports.proxmox import ProxmoxCredentials

PROXMOX_POLICY = AddressPolicy("Proxmox API", allow_private=True)


class _GuardedConnection(HTTPSConnection):
    """An HTTPS connection that connects only to an address the Proxmox policy accepted; TLS still
    verifies (and sends SNI for) the host name."""

    def _new_conn(self) -> socket.socket:
        try:
            addresses = PROXMOX_POLICY.resolve(self.host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error: OSError | None = None
        for address in addresses:
            try:
                return connection.create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
            except OSError as exc:
                error = exc
        raise NewConnectionError(self, f"failed to establish a new connection: {error}")


class _GuardedPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedConnection


class GuardedAdapter(HTTPAdapter):
    """Applies the Proxmox address rule to every connection; with ``fingerprint``, trusts exactly
    the certificate with that SHA-256 fingerprint (urllib3 checks it right after the handshake)."""

    def __init__(self, fingerprint: str | None = None) -> None:
        self._fingerprint = fingerprint.replace(":", "").lower() if fingerprint else None
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._fingerprint:
            kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme,
            "https": _GuardedPool,
        }


class SessionTicketAuth(ProxmoxHTTPAuth):  # type: ignore[misc]  # proxmoxer ships no type hints
    """proxmoxer's ticket auth (cookie + CSRF token, renewed after an hour), logging in and renewing
    through ``session`` instead of a bare ``requests.post``."""

    pve_auth_ticket: str
    csrf_prevention_token: str
    birth_time: float

    def __init__(self, session: requests.Session, username: str, password: str, *, base_url: str,
                 timeout: float) -> None:  # fmt: skip
        self._session = session
        self._plain = ProxmoxHTTPAuthBase(timeout=timeout, verify_ssl=session.verify)
        super().__init__(username, password, base_url=base_url, verify_ssl=session.verify, timeout=timeout)

    def _get_new_tokens(self, password: str | None = None, otp: Any = None, otptype: Any = None) -> None:
        data = {"username": self.username, "password": self.pve_auth_ticket if password is None else password}
        # auth=_plain: the login itself carries no ticket (and must not trigger a renewal)
        response = self._session.request(
            "POST", self.base_url + "/access/ticket", data=data, auth=self._plain, timeout=self.timeout
        )
        if response.status_code != 200:
            raise AuthenticationError(
                f"Couldn't authenticate user: {self.username} code: {response.status_code}"
            )
        answer = response.json()["data"]
        if answer.get("NeedTFA") is not None:
            raise AuthenticationError(
                f"user {self.username} needs a second factor, which the operator cannot give; "
                "use an API token (tokenId/tokenSecret)"
            )
        self.birth_time = time.monotonic()
        self.pve_auth_ticket = answer["ticket"]
        self.csrf_prevention_token = answer["CSRFPreventionToken"]


def open_api(credentials: ProxmoxCredentials, *, verify: str | bool, timeout: float) -> Any:
    """A proxmoxer resource tree over one guarded (and, with a fingerprint, pinned) session; a
    password login happens here, through that session."""
    parts = urlsplit(credentials.url if "://" in credentials.url else f"https://{credentials.url}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    base_url = f"https://{host}:{parts.port or 8006}/api2/json"
    serializer = JsonSerializer()
    session = ProxmoxHttpSession()
    session.headers["Connection"] = "keep-alive"
    session.headers["accept"] = serializer.get_accept_types()
    session.verify = verify
    session.mount("https://", GuardedAdapter(credentials.fingerprint))
    if credentials.fingerprint:
        session.trust_env = False  # no proxy from the environment, no CA bundle override
    if credentials.token_id:
        user, _, token_name = credentials.token_id.rpartition("!")
        session.auth = ProxmoxHTTPApiTokenAuth(
            user, token_name, credentials.token_secret, verify_ssl=verify, timeout=timeout
        )
    else:
        session.auth = SessionTicketAuth(
            session, credentials.username or "", credentials.password or "", base_url=base_url,
            timeout=timeout,
        )  # fmt: skip
    return ProxmoxResource(base_url=base_url, session=session, serializer=serializer)
