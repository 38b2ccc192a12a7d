"""aiohttp requests on a tenant's behalf under an address rule (k3s_deploy/netpolicy.py).

The session's resolver resolves each host once and refuses it when any address breaks the rule; aiohttp
then connects to the addresses the resolver returned, so nothing re-resolves between the check and the
connect. Redirects are followed here, one hop at a time, each hop checked like the first. No proxy
from the environment is used (aiohttp's ``trust_env`` stays off).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from k3s_deploy import errors
from k3s_deploy.netpolicy import AddressPolicy

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and lets through only addresses the policy accepts."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self._policy.check_name(host)
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, family=family
        )
        self._policy.checked(host, (str(info[4][0]) for info in infos))
        return [
            {
                "hostname": host,
                "host": str(sockaddr[0]),
                "port": int(sockaddr[1]),
                "family": fam,
                "proto": proto,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for fam, _type, proto, _name, sockaddr in infos
        ]

    async def close(self) -> None:
        return None


def ssl_context(extra_ca: Path | None) -> ssl.SSLContext:
    """The system trust store, plus ``extra_ca`` (PEM) for mirrors signed by an internal CA."""
    context = ssl.create_default_context()
    if extra_ca is not None:
        context.load_verify_locations(cafile=str(extra_ca))
    return context


def session(
    policy: AddressPolicy, timeout: aiohttp.ClientTimeout, *, context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientSession:  # fmt: skip
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy), use_dns_cache=False, ssl=context if context is not None else True
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers, trust_env=False)


@asynccontextmanager
async def get(
    client: aiohttp.ClientSession,
    url: str,
    policy: AddressPolicy,
    *,
    check_hop: Callable[[URL], None] = lambda _url: None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET ``url``, following redirects here: each hop passes ``check_hop`` (scheme, host list) and
    the address rule before anything connects to it. Yields the final response."""
    target = URL(url)
    for _hop in range(MAX_REDIRECTS + 1):
        check_hop(target)
        policy.check_literal(target.host or "")
        async with client.get(target, allow_redirects=False, headers=headers) as response:
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                yield response
                return
        target = target.join(URL(location))
    raise errors.PermanentError(f"{url} redirects more than {MAX_REDIRECTS} times", reason="TooManyRedirects")
