"""Scale-down planning: which surplus member leaves next, and whether it may leave now (pure).

Surplus members are children the spec no longer wants (replicas lowered, a discovered VM no longer
tagged). Agents go first, highest index first; then servers one at a time, highest index first, and
only while every server that stays is Ready, so no step takes etcd below quorum. At least one server
always stays (the spec cannot ask for fewer). The init server is not special once the cluster is
formed: the server that stays becomes the anchor of later joins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["server", "agent"]

_INDEX = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class Surplus:
    name: str
    role: Role


@dataclass(frozen=True)
class Removal:
    """``node`` leaves now; or ``node`` is None and ``message`` says why nothing leaves yet."""

    node: Surplus | None
    message: str = ""


def index_of(name: str) -> int:
    match = _INDEX.search(name)
    return int(match.group(1)) if match else -1


def order(surplus: Sequence[Surplus]) -> list[Surplus]:
    """Agents before servers; within a role the highest index (newest member) first."""
    return sorted(surplus, key=lambda s: (s.role == "server", -index_of(s.name), s.name))


def next_removal(
    surplus: Sequence[Surplus],
    *,
    staying_servers: Mapping[str, bool],
) -> Removal:
    """The next member to remove. ``staying_servers``: server name -> Ready in the cluster's API."""
    queue = order(surplus)
    if not queue:
        return Removal(None)
    first = queue[0]
    if first.role == "agent":
        return Removal(first)
    if not staying_servers:
        return Removal(None, f"not removing server {first.name}: no other server would be left")
    not_ready = sorted(name for name, ready in staying_servers.items() if not ready)
    if not_ready:
        return Removal(
            None,
            f"not removing server {first.name} yet: server(s) {', '.join(not_ready)} must be Ready first "
            "(etcd quorum)",
        )
    return Removal(first)


def next_anchor(init_server: str | None, removing: str, servers: Sequence[str]) -> str | None:
    """The init server to record once ``removing`` is gone (another server when it was the init one)."""
    if init_server != removing:
        return init_server
    others = [s for s in servers if s != removing]
    return others[0] if others else None
