"""Tickets, CSRF tokens, API tokens and ACL privileges, as PVE's access control computes them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from k3s_deploy_lab.pvesim.model import Acl, State

TICKET_LIFETIME = 7200
ALL = "__all__"


@dataclass(frozen=True)
class Identity:
    user: str
    tokenid: str | None = None  # full token id `user@realm!name`

    @property
    def upid_user(self) -> str:
        return self.tokenid or self.user


def _sign(secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()).decode()


def make_ticket(state: State, user: str, now: float | None = None) -> tuple[str, str]:
    stamp = f"{int(now if now is not None else time.time()):08X}"
    plain = f"PVE:{user}:{stamp}"
    ticket = f"{plain}::{_sign(state.ticket_secret, plain)}"
    csrf = f"{stamp}:{_sign(state.ticket_secret, f'{stamp}:{user}').rstrip('=')}"
    return ticket, csrf


def verify_ticket(state: State, ticket: str) -> str | None:
    """The user a valid, unexpired ticket belongs to."""
    plain, sep, sig = ticket.partition("::")
    parts = plain.split(":")
    if not sep or len(parts) != 3 or parts[0] != "PVE":
        return None
    if not hmac.compare_digest(_sign(state.ticket_secret, plain), sig):
        return None
    try:
        age = time.time() - int(parts[2], 16)
    except ValueError:
        return None
    if age > TICKET_LIFETIME or age < -300:
        return None
    user = parts[1]
    return user if user in state.users and state.users[user].enable else None


def verify_csrf(state: State, token: str, user: str) -> bool:
    stamp, _, sig = token.partition(":")
    try:
        age = time.time() - int(stamp, 16)
    except ValueError:
        return False
    expected = _sign(state.ticket_secret, f"{stamp}:{user}").rstrip("=")
    return hmac.compare_digest(expected, sig) and -300 < age < TICKET_LIFETIME


def verify_token_header(state: State, header: str) -> Identity | None:
    """`PVEAPIToken=USER@REALM!TOKENID=SECRET` (split at the last '=')."""
    if not header.startswith("PVEAPIToken="):
        return None
    full_id, sep, secret = header[len("PVEAPIToken=") :].rpartition("=")
    token = state.tokens.get(full_id) if sep else None
    if token is None or not hmac.compare_digest(token.secret, secret):
        return None
    owner = state.users.get(token.user)
    return Identity(token.user, full_id) if owner and owner.enable else None


def _norm(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


_INDEX: dict[int, tuple[tuple[int, int], dict[tuple[str, str], list[Acl]]]] = {}


def _acl_index(state: State) -> dict[tuple[str, str], list[Acl]]:
    """ACLs by (ugid, normalised path), rebuilt when the ACL list changes (cheap checks at 500 VMs)."""
    key = (id(state.acls), len(state.acls))
    cached = _INDEX.get(id(state))
    if cached is not None and cached[0] == key:
        return cached[1]
    index: dict[tuple[str, str], list[Acl]] = {}
    for acl in state.acls:
        index.setdefault((acl.ugid, _norm(acl.path)), []).append(acl)
    _INDEX[id(state)] = (key, index)
    return index


def _acl_privs(state: State, ugid: str, path: str) -> set[str]:
    """Privileges of one user/token id on ``path``: the deepest ACL level wins, as in PVE."""
    index = _acl_index(state)
    parts = [p for p in path.split("/") if p]
    levels = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
    result: set[str] = set()
    for level in levels:
        entries = index.get((ugid, level))
        if not entries:
            continue
        exact = level == levels[-1]
        found = [a for a in entries if exact or a.propagate]
        if found:
            result = set()
            for acl in found:
                result |= set(state.roles.get(acl.roleid, []))
    return result


def privileges(state: State, ident: Identity, path: str) -> set[str] | str:
    """The privileges of ``ident`` on ``path`` (``ALL`` for root@pam without privilege separation)."""

    def of(ugid: str, is_root: bool) -> set[str] | str:
        if is_root:
            return ALL
        privs = _acl_privs(state, ugid, path)
        m = path.split("/")
        if len(m) == 3 and m[1] == "vms" and m[2].isdigit():
            pool = state.vm_pool(int(m[2]))
            if pool:
                privs |= _acl_privs(state, ugid, f"/pool/{pool}")
        return privs

    user_privs = of(ident.user, ident.user == "root@pam")
    if ident.tokenid is None:
        return user_privs
    token = state.tokens[ident.tokenid]
    if not token.privsep:
        return user_privs
    token_privs = of(ident.tokenid, False)
    if user_privs == ALL:
        return token_privs
    assert isinstance(token_privs, set) and isinstance(user_privs, set)
    return token_privs & user_privs


def has(state: State, ident: Identity, path: str, privs: list[str], *, any_of: bool = False) -> bool:
    have = privileges(state, ident, path)
    if have == ALL:
        return True
    assert isinstance(have, set)
    return any(p in have for p in privs) if any_of else all(p in have for p in privs)


def _subst(path: str, params: dict[str, Any]) -> str | None:
    out = path
    for key, value in params.items():
        out = out.replace("{" + key + "}", str(value))
    return None if "{" in out else out


def check_expr(state: State, ident: Identity, expr: list[Any], params: dict[str, Any]) -> tuple[bool, str]:
    """Evaluate a schema `check` expression; returns (allowed, "path, privs" text for the 403)."""
    op = expr[0]
    if op in ("and", "or"):
        results = [check_expr(state, ident, sub, params) for sub in expr[1:]]
        ok = all(r[0] for r in results) if op == "and" else any(r[0] for r in results)
        failed = next((r[1] for r in results if not r[0]), results[0][1])
        return ok, failed
    if op == "perm":
        path, privs = expr[1], list(dict.fromkeys(expr[2]))
        opts = dict(zip(expr[3::2], expr[4::2], strict=False))
        if "require_param" in opts and opts["require_param"] not in params:
            return False, f"{path}, {'|'.join(privs)}"
        concrete = _subst(path, params)
        if concrete is None:
            return False, f"{path}, {'|'.join(privs)}"
        if opts.get("any"):
            return has(state, ident, concrete, privs, any_of=True), f"{concrete}, {'|'.join(privs)}"
        missing = next((p for p in privs if not has(state, ident, concrete, [p])), None)
        return missing is None, f"{concrete}, {missing or privs[0]}"
    return False, str(expr)
