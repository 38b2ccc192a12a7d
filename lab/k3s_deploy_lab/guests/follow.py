"""Follow the Proxmox simulator's admin ``/guests`` list by long polling, and feed each snapshot on.

Contract (lab/pvesim): ``GET <adminUrl>/guests?since=<revision>&wait=<seconds>`` answers
``{"revision": int, "guests": [...]}`` as soon as the revision moves past ``since`` (or after ``wait``).
Connection details come from the lab's ``pve.json``: ``adminUrl``, optional ``adminToken`` (sent as a
bearer token) and ``caCert`` (the simulator's CA, used to verify an https admin URL). When given an
``agent_channel`` (``{"url": ..., "token": ...}``), the feed registers it with ``PUT <adminUrl>/agent-channel``
before its first poll and again after every failed one (the simulator may have restarted); a feed
that does not know the call (404, 405) is left alone.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

Snapshot = Callable[[list[dict[str, Any]]], Awaitable[None]]


class GuestsFeed:
    """Long-polls the admin endpoint and hands every new snapshot to ``on_snapshot``."""

    def __init__(
        self,
        admin_url: str,
        *,
        token: str | None = None,
        ca_cert: str | None = None,
        wait: float = 20.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.url = admin_url.rstrip("/") + "/guests"
        self.channel_url = admin_url.rstrip("/") + "/agent-channel"
        self.agent_channel: dict[str, str] | None = None
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_cert) if ca_cert else True
        self.wait = wait
        self.log = log
        self.revision = -1
        self.synced = asyncio.Event()

    @classmethod
    def from_pve_json(cls, path: Path, **kwargs: Any) -> GuestsFeed:
        info = json.loads(path.read_text())
        admin = info.get("adminUrl")
        if not admin:
            raise RuntimeError(f"{path} has no adminUrl: start the pve component first")
        return cls(admin, token=info.get("adminToken"), ca_cert=info.get("caCert"), **kwargs)

    async def run(self, on_snapshot: Snapshot) -> None:
        """Poll forever; errors are logged and retried (the simulator may restart)."""
        timeout = aiohttp.ClientTimeout(total=self.wait + 30)
        async with aiohttp.ClientSession(timeout=timeout, headers=self.headers) as session:
            failures = 0
            while True:
                params = {"since": str(self.revision), "wait": str(int(self.wait))}
                try:
                    if failures or not self.synced.is_set():
                        await self._register(session)
                    async with session.get(self.url, params=params, ssl=self.ssl) as resp:
                        resp.raise_for_status()
                        body = await resp.json()
                    failures = 0
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    failures += 1
                    if failures in (1, 10) or failures % 100 == 0:
                        self.log(f"guests feed: {self.url} failed ({exc}); retrying")
                    await asyncio.sleep(min(0.2 * failures, 2.0))
                    continue
                revision = int(body.get("revision", 0))
                if revision == self.revision and self.synced.is_set():
                    continue
                try:
                    await on_snapshot(list(body.get("guests") or []))
                except Exception as exc:  # keep following; the next snapshot retries
                    self.log(f"guests feed: applying revision {revision} failed: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(1.0)
                    continue
                self.revision = revision
                self.synced.set()

    async def _register(self, session: aiohttp.ClientSession) -> None:
        if self.agent_channel is None:
            return
        async with session.put(self.channel_url, json=self.agent_channel, ssl=self.ssl) as resp:
            if resp.status not in (404, 405):
                resp.raise_for_status()
