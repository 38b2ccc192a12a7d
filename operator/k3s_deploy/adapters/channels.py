"""ChannelServer over aiohttp: one GET with a time limit, TLS verified with the system trust store.

The channel server's URL is written by a tenant (``spec.k3s.channelServer``), so the request follows
the address rule of downloads (guarded_http.py): no loopback, link-local, metadata or private address
unless the operator's ``fetchAllowedHosts`` lists it, checked after resolution and on every redirect.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from k3s_deploy import errors
from k3s_deploy.adapters import guarded_http
from k3s_deploy.netpolicy import AddressPolicy, AllowList

_MAX_BYTES = 1 << 20


class HttpChannelServer:
    """Fetches channel documents; a new short-lived session per call (a few calls an hour).

    A failure is remembered per URL for ``retry_after_s``: sites without internet access (air-gapped,
    or a lab) then pay the connect timeout once in a while, not on every reconcile pass.
    """

    def __init__(
        self, allowed: AllowList | None = None, *, timeout_s: float = 10.0, retry_after_s: float = 300.0
    ) -> None:
        self._policy = AddressPolicy(
            "K3s channel server",
            allowed or AllowList(),
            fix="an operator admin can list the address or its network in fetchAllowedHosts "
            "(K3SD_FETCH_ALLOWED_HOSTS)",
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry_after = retry_after_s
        self._failed: dict[str, tuple[float, errors.TransientError]] = {}

    async def fetch(self, url: str) -> Any:
        now = asyncio.get_running_loop().time()
        failed = self._failed.get(url)
        if failed is not None and now < failed[0]:
            raise failed[1]
        try:
            result = await self._fetch(url)
        except errors.TransientError as exc:
            self._failed[url] = (now + self._retry_after, exc)
            raise
        self._failed.pop(url, None)
        return result

    async def _fetch(self, url: str) -> Any:
        try:
            headers = {"Accept": "application/json"}
            async with (
                guarded_http.session(self._policy, self._timeout) as session,
                guarded_http.get(session, url, self._policy, headers=headers) as response,
            ):
                if response.status != 200:
                    raise errors.TransientError(
                        f"channel server {url} answered HTTP {response.status}",
                        reason="ChannelServerUnavailable",
                    )
                body = await response.content.read(_MAX_BYTES)
                return await asyncio.to_thread(_decode, body, url)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise errors.TransientError(
                f"channel server {url} cannot be reached: {type(exc).__name__}",
                reason="ChannelServerUnavailable",
            ) from exc


def _decode(body: bytes, url: str) -> Any:
    import json

    try:
        return json.loads(body)
    except ValueError as exc:
        raise errors.TransientError(
            f"channel server {url} did not answer JSON", reason="ChannelServerUnavailable"
        ) from exc
