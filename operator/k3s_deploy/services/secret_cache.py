"""A KubeGateway whose Secret reads are shared: one read per Secret per resync, not one per object.

Every ProxmoxVM pass loads its credentials Secret. With a thousand objects on one credential that was a
thousand Secret reads per resync interval through the synchronous kubernetes client (a worker thread,
TLS, JSON decoding each): most of the operator's idle CPU. A Secret younger than ``max_age`` now serves
every asker; concurrent askers wait for the same read. A missing Secret is not cached (creating it is
noticed on the next pass), and a rotated one is picked up within ``max_age``, as the inventory is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from k3s_deploy.ports.kube import KubeGateway


@dataclass
class _Entry:
    data: dict[str, bytes]
    taken_at: float


class SecretCachingGateway:
    """Delegates to ``inner``; ``read_secret`` answers from a short-lived cache."""

    def __init__(
        self, inner: KubeGateway, *, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._max_age = max_age
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.reads = 0

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        key = (namespace, name)
        asked = self._clock()
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._entries.get(key)
            if entry is not None and asked - entry.taken_at < self._max_age:
                return dict(entry.data)
            data = await self._inner.read_secret(namespace, name)
            self.reads += 1
            if data is None:
                self._entries.pop(key, None)
                return None
            self._entries[key] = _Entry(dict(data), self._clock())
            return data

    def invalidate(self, namespace: str, name: str) -> None:
        """The next read of this Secret asks the API again."""
        self._entries.pop((namespace, name), None)

    async def read_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return await self._inner.read_object(group, version, plural, namespace, name)  # never cached

    async def list_objects(
        self, group: str, version: str, plural: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        return await self._inner.list_objects(group, version, plural, namespace, label_selector)

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> str | None:
        return await self._inner.patch_status(group, version, plural, namespace, name, status)

    async def patch_annotations(
        self, group: str, version: str, plural: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        await self._inner.patch_annotations(group, version, plural, namespace, name, annotations)

    async def post_event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        await self._inner.post_event(involved, type_=type_, reason=reason, message=message)
