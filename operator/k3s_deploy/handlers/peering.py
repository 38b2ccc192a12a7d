"""HA: hold the shared ProxmoxVM scheduler while kopf peering says another replica is in charge.

kopf pauses its own handlers and daemons when a live peer has a higher (or the same) priority; our
scheduler is not a kopf daemon, so it reads the same peering object and applies the same rule: the
peering status maps each replica's identity to its priority, last-seen time and lifetime. A replica
whose ``lastseen + lifetime`` has passed is dead and ignored. kopf itself re-touches the object when
a blocking peer is due to expire, so every change of the verdict arrives as an event (the watch is
registered with the ProxmoxVM handlers).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from k3s_deploy.errors import K3sDeployError, TransientError

log = logging.getLogger(__name__)
PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"


def peering_plural(clusterwide: bool) -> str:
    return "clusterkopfpeerings" if clusterwide else "kopfpeerings"


def _lastseen(value: Any, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now
    try:
        seen = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return now
    return seen if seen.tzinfo is not None else seen.replace(tzinfo=dt.UTC)


def blocked_by_peers(
    status: Mapping[str, Any], *, identity: str, priority: int, now: dt.datetime | None = None
) -> list[str]:
    """Identities of live peers that make us stand by (a higher or an equal priority), as kopf does."""
    now = now or dt.datetime.now(dt.UTC)
    blocking = []
    for peer, info in status.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        try:
            lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
            their = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if _lastseen(info.get("lastseen"), now) + lifetime <= now:
            continue  # dead
        if their >= priority:
            blocking.append(peer)
    return sorted(blocking)


class PeeringGate:
    """Per peering object (one per watched namespace, or one cluster-wide): are we standing by?"""

    def __init__(self, *, identity: str, priority: int, name: str) -> None:
        self.identity = identity
        self.priority = priority
        self.name = name
        self._blocked: dict[str, list[str]] = {}

    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> bool | None:
        """Take in one peering object; returns the new verdict (True: pause) or None if not ours."""
        meta = body.get("metadata") or {}
        if meta.get("name") != self.name:
            return None
        where = str(meta.get("namespace") or "")
        if deleted:
            self._blocked.pop(where, None)
        else:
            blocking = blocked_by_peers(
                body.get("status") or {}, identity=self.identity, priority=self.priority
            )
            if blocking != self._blocked.get(where, []):
                log.info(
                    "peering %s: %s",
                    where or "cluster",
                    f"standing by for {blocking}" if blocking else "active",
                )
            self._blocked[where] = blocking
        return self.paused

    @property
    def paused(self) -> bool:
        return any(self._blocked.values())


def peering_locations(namespaces: Sequence[str]) -> list[str | None]:
    """Where kopf looks for the peering object: cluster-wide (None) or once per watched namespace.
    Namespace patterns (globs, exclusions) name no single namespace and are skipped."""
    if not namespaces:
        return [None]
    return [ns for ns in namespaces if not set(ns) & set("*?[]!,")]


async def ensure_peering(
    create: Callable[[str, str | None], Awaitable[bool]],
    *,
    name: str,
    namespaces: Sequence[str],
    attempts: int = 5,
    delay: float = 2.0,
) -> None:
    """Create each missing peering object, so one `kubectl apply -k` installs a working HA pair."""
    for where in peering_locations(namespaces):
        for attempt in range(attempts):
            try:
                created = await create(name, where)
                break
            except TransientError:
                if attempt + 1 < attempts:
                    await asyncio.sleep(delay)
                    continue
                raise
            except K3sDeployError as exc:
                # Without the object kopf sees no peers: every replica would act. Say so loudly.
                log.error("peering object %s %s: %s", name, where or "(cluster-wide)", exc)
                created = False
                break
        if created:
            log.info("created the peering object %s %s", name, f"in {where}" if where else "cluster-wide")
