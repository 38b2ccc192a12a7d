"""K3s join tokens, in the real format and with the real checks.

A server's ``token`` (and ``node-token``) is ``K10<sha256 of the cluster CA PEM>::server:<password>``.
A joining node may present that full token (then the CA hash must match the cluster it reaches, which
pins the CA) or just the password ("short token"). A server started with ``--agent-token`` also
accepts ``node:<agent password>`` from agents (written to ``server/agent-token``); that token never
opens the server bootstrap, so it cannot join a server. See https://docs.k3s.io/cli/token.
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


def full_token(ca_pem: bytes, password: str, *, user: str = "server") -> str:
    return f"K10{ca_hash(ca_pem)}::{user}:{password}"


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


def check_ca(presented: str, *, cluster_ca_pem: bytes) -> None:
    """A secure token pins the cluster CA: refuse it, with K3s's words, when the hash differs."""
    parsed = parse(presented)
    actual = ca_hash(cluster_ca_pem)
    if parsed.ca_hash is not None and parsed.ca_hash != actual:
        raise TokenError(
            f"token CA hash does not match the Cluster CA certificate hash: {parsed.ca_hash} != {actual}"
        )


def check(
    presented: str,
    *,
    cluster_ca_pem: bytes,
    password: str,
    server_url: str,
    role: str = "server",
    agent_password: str | None = None,
) -> None:
    """Raise :class:`TokenError` with K3s's wording when ``presented`` does not open this cluster.

    The CA hash is checked first (before any credential is sent). A server must present the server
    password (as ``server``); an agent may present the server token or the agent token (``node``).
    """
    check_ca(presented, cluster_ca_pem=cluster_ca_pem)
    parsed = parse(presented)
    if role == "server":
        ok = parsed.username == "server" and secrets.compare_digest(parsed.password, password)
        where = "server-bootstrap"
    else:
        accepted = [("server", password), ("node", agent_password or password)]
        if parsed.ca_hash is None:  # a short token names no user: K3s tries it as the node password
            accepted += [("server", agent_password or password)]
        ok = any(
            parsed.username == user and secrets.compare_digest(parsed.password, secret)
            for user, secret in accepted
        )
        where = "serving-kubelet.crt"
    if not ok:
        raise TokenError(f"{server_url}/v1-k3s/{where}: 401 Unauthorized")
