"""K3s join tokens, in the real format and with the real checks.

A server's ``node-token`` is ``K10<sha256 of the cluster CA bundle>::server:<password>``. A joining node
may present that full token (then the CA hash must match the cluster it reaches, which pins the CA) or
just the password ("short token"). See https://docs.k3s.io/cli/token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass


class TokenError(ValueError):
    """A token K3s would refuse; the message is the one K3s logs."""


@dataclass(frozen=True)
class ParsedToken:
    ca_hash: str | None
    username: str
    password: str


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(ca_pem).hexdigest()


def full_token(ca_pem: bytes, password: str) -> str:
    return f"K10{ca_hash(ca_pem)}::server:{password}"


def new_password() -> str:
    return secrets.token_hex(16)


def parse(token: str) -> ParsedToken:
    token = token.strip()
    if not token:
        raise TokenError("token is empty")
    if token.startswith("K10") and "::" in token:
        hash_part, creds = token[3:].split("::", 1)
        if ":" not in creds:
            raise TokenError(
                "failed to normalize server token; must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>"
            )
        user, password = creds.split(":", 1)
        return ParsedToken(ca_hash=hash_part or None, username=user, password=password)
    return ParsedToken(ca_hash=None, username="server", password=token)


def check(presented: str, *, cluster_ca_pem: bytes, password: str, server_url: str) -> None:
    """Raise :class:`TokenError` with K3s's wording when ``presented`` does not open this cluster."""
    parsed = parse(presented)
    actual = ca_hash(cluster_ca_pem)
    if parsed.ca_hash is not None and parsed.ca_hash != actual:
        raise TokenError(
            f"token CA hash does not match the Cluster CA certificate hash: {parsed.ca_hash} != {actual}"
        )
    if not secrets.compare_digest(parsed.password, password):
        raise TokenError(f"{server_url}/v1-k3s/server-bootstrap: 401 Unauthorized")
