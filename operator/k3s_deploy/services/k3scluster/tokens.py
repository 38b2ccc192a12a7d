"""K3s join tokens: the secure server token, and a separate agent token.

K3s's secure format ``K10<sha256 of the cluster CA>::server:<password>`` lets a joining node check
the CA of the server it reaches before it sends any credential. The first server can only start
with the password alone (it makes the CA), so the operator starts it that way, then reads the secure
token K3s writes to ``/var/lib/rancher/k3s/server/token`` (over SSH to a verified host key; still
hostile guest input: format and length checked, and its password must be ours) and keeps it in
``<cluster>-token`` (key ``token``). Servers run with ``--agent-token`` (key ``agentToken``), so agents
join with ``K10<hash>::node:<agent password>`` and never hold the server token. A cluster whose
servers were installed before agent tokens keeps joining agents with the secure server token until
its servers are installed again (an upgrade does it), then switches by itself.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from typing import Literal

from k3s_deploy import errors
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.ports.ssh import SshRunner, SshTarget
from k3s_deploy.secrets_mask import register_secret
from k3s_deploy.services.cluster_identity import CLUSTER_ID_KEY
from k3s_deploy.services.k3scluster.secrets import TOKEN_KEY, managed_labels, one_line, token_secret_name
from k3s_deploy.services.k3scluster.topology import ClusterRef

AGENT_TOKEN_KEY = "agentToken"  # noqa: S105 - a key name inside the Secret
SERVER_TOKEN_FILE = "/var/lib/rancher/k3s/server/token"  # noqa: S105 - a path
AGENT_TOKEN_FILE = "/var/lib/rancher/k3s/server/agent-token"  # noqa: S105 - a path
_MAX_TOKEN_FILE = 1024
_SECURE = re.compile(r"K10([0-9a-f]{64})::(server|node):([\x21-\x7e]{1,256})")


def new_password() -> str:
    return secrets.token_hex(32)


def password_of(token: str) -> str:
    """The credential part of a token in either format (a short token is only that)."""
    found = _SECURE.fullmatch(token)
    return found.group(3) if found else token


def ca_hash_of(token: str | None) -> str | None:
    found = _SECURE.fullmatch(token or "")
    return found.group(1) if found else None


@dataclass(frozen=True)
class JoinTokens:
    """What each kind of install gets. ``secure`` is None until the first server wrote it."""

    server: str  # the server password: the first server starts with it alone
    secure: str | None = None  # K10<ca hash>::server:<password>
    agent: str | None = None  # the agent password (--agent-token on every server)
    agents_use_agent_token: bool = True  # False: servers from before agent tokens

    def env(self, kind: Literal["init", "single", "join-server", "agent"]) -> list[tuple[str, str]]:
        """The installer's token variables for one install step."""
        if kind == "agent":
            ca_hash = ca_hash_of(self.secure)
            if self.agent and ca_hash and self.agents_use_agent_token:
                return [("K3S_TOKEN", f"K10{ca_hash}::node:{self.agent}")]
            return [("K3S_TOKEN", self.secure or self.server)]
        token = self.secure if kind == "join-server" and self.secure else self.server
        return [("K3S_TOKEN", token)] + ([("K3S_AGENT_TOKEN", self.agent)] if self.agent else [])


async def load(
    objects: ClusterObjects, ref: ClusterRef, user_token: str | None, *, user_secret: str | None = None
) -> tuple[JoinTokens, str]:
    """The cluster's tokens, creating what is missing in ``<cluster>-token``; also returns the event
    to post (empty when nothing was created). ``user_token``: the value of spec.k3s.tokenSecretRef."""
    name = token_secret_name(ref.name)
    raw = await objects.read_secret(ref.namespace, name) or {}
    own = {
        k: one_line(v.decode(errors="replace"), name=name, key=k, what="the cluster's join tokens")
        for k, v in raw.items()
        if k in (TOKEN_KEY, AGENT_TOKEN_KEY)
    }
    base = user_token.strip() if user_token is not None else own.get(TOKEN_KEY) or ""
    created = []
    if not base:
        base = new_password()
        created.append("join token")
    server = password_of(base)
    stored = own.get(TOKEN_KEY)
    secure = base if ca_hash_of(base) else None
    if secure is None and stored and ca_hash_of(stored) and password_of(stored) == server:
        secure = stored
    agent = own.get(AGENT_TOKEN_KEY) or ""
    if not agent:
        agent = new_password()
        created.append("agent token")
    for value in (base, secure, agent):
        register_secret(value)
    tokens = JoinTokens(server=server, secure=secure, agent=agent)
    if created and user_secret != name:
        await save(objects, ref, tokens, keep_token=None if user_token is not None else base)
    what = f"Generated the cluster {' and '.join(created)} into Secret {name}" if created else ""
    return tokens, what


async def save(
    objects: ClusterObjects, ref: ClusterRef, tokens: JoinTokens, *, keep_token: str | None
) -> None:
    data = {AGENT_TOKEN_KEY: (tokens.agent or "").encode()}
    if ref.identity:  # the cluster's stable id lives in the same Secret: never written away
        data[CLUSTER_ID_KEY] = ref.identity.encode()
    token = tokens.secure or keep_token
    if token:
        data[TOKEN_KEY] = token.encode()
    await objects.write_secret(
        ref.namespace,
        token_secret_name(ref.name),
        data,
        labels=managed_labels(ref.name),
        owner=ref.owner_reference(),
    )


def parse_guest_token(raw: bytes, *, password: str, what: str) -> str:
    """The secure token a server wrote, checked: one line, K3s's format, bounded, our password."""
    if len(raw) > _MAX_TOKEN_FILE:
        raise errors.PermanentError(f"{what} is larger than {_MAX_TOKEN_FILE} bytes", reason="TokenInvalid")
    text = raw.decode("ascii", errors="replace").strip()
    found = _SECURE.fullmatch(text)
    if found is None or found.group(2) != "server":
        raise errors.PermanentError(
            f"{what} is not a K3s secure server token (K10<CA hash>::server:<password>)",
            reason="TokenInvalid",
        )
    if not secrets.compare_digest(found.group(3), password):
        raise errors.PermanentError(
            f"{what} holds another password than the cluster's join token: the server was initialised "
            "with a different token; restore the original token into the token Secret",
            reason="TokenMismatch",
        )
    return text


async def learn(
    ssh: SshRunner, node: str, target: SshTarget, tokens: JoinTokens, *, agents_joining: bool
) -> JoinTokens:
    """Read the secure token from a running server (once), and whether its agent token is ours."""
    if tokens.secure is None:
        raw = await _read(ssh, node, target, SERVER_TOKEN_FILE)
        secure = parse_guest_token(raw, password=tokens.server, what=f"{SERVER_TOKEN_FILE} on {node}")
        register_secret(secure)
        tokens = replace(tokens, secure=secure)
    if agents_joining and tokens.agent:
        try:
            raw = await _read(ssh, node, target, AGENT_TOKEN_FILE)
        except errors.GuestNotReady:
            raw = b""
        agent_file = raw[:_MAX_TOKEN_FILE].decode("ascii", errors="replace").strip()
        ours = _SECURE.fullmatch(agent_file)
        usable = bool(
            ours and ours.group(2) == "node" and secrets.compare_digest(ours.group(3), tokens.agent)
        )
        tokens = replace(tokens, agents_use_agent_token=usable)
    return tokens


async def _read(ssh: SshRunner, node: str, target: SshTarget, path: str) -> bytes:
    try:
        return await ssh.fetch(target, path)
    except errors.CommandFailed as exc:
        raise errors.GuestNotReady(f"node {node}: K3s has not written {path} yet") from exc
