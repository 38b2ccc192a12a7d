"""The operator's artefact fetcher (adapters/artefacts.py) against a real HTTP(S) server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from k3s_deploy import errors
from k3s_deploy.adapters.artefacts import USER_AGENT, HttpArtefactFetcher
from k3s_deploy.lab.pvesim.tls import ensure_certs

pytestmark = pytest.mark.integration

BINARY = b"\x7fELF" + bytes(range(256)) * 4096  # 1 MiB + 4 bytes


class Server:
    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []  # (path, user agent)
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append((request.path, request.headers.get("User-Agent", "")))
        if request.path == "/k3s":
            await asyncio.sleep(0.2)  # slow enough that concurrent callers overlap
            return web.Response(body=BINARY)
        if request.path == "/busy":
            return web.Response(status=503)
        return web.Response(status=404)


async def _serve(app_server: Server, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[None]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", app_server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
    app_server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    async for _ in _serve(s):
        yield s


async def test_concurrent_nodes_share_one_download(server: Server) -> None:
    fetcher = HttpArtefactFetcher()
    try:
        got = await asyncio.gather(*(fetcher.fetch(f"{server.url}/k3s", max_bytes=2 << 20) for _ in range(5)))
        again = await fetcher.fetch(f"{server.url}/k3s", max_bytes=2 << 20)
        assert server.hits == [("/k3s", USER_AGENT)]
        assert {a.path for a in got} == {again.path}
        assert again.path.read_bytes() == BINARY and again.size == len(BINARY)
        assert again.sha256 == hashlib.sha256(BINARY).hexdigest()
        ok = await fetcher.fetch(f"{server.url}/k3s", max_bytes=2 << 20, sha256=again.sha256.upper())
        assert ok.path == again.path
        with pytest.raises(errors.ArtefactRejected, match="expected"):
            await fetcher.fetch(f"{server.url}/k3s", max_bytes=2 << 20, sha256="0" * 64)
    finally:
        fetcher.close()
    assert not again.path.exists()


async def test_limits_and_http_errors(server: Server, tmp_path: Path) -> None:
    fetcher = HttpArtefactFetcher()
    try:
        with pytest.raises(errors.ArtefactRejected, match="larger than the limit of 1000 bytes"):
            await fetcher.fetch(f"{server.url}/k3s", max_bytes=1000)
        with pytest.raises(errors.ArtefactRejected, match="HTTP 404"):
            await fetcher.fetch(f"{server.url}/nothing", max_bytes=1000)
        with pytest.raises(errors.ArtefactUnavailable, match="HTTP 503"):
            await fetcher.fetch(f"{server.url}/busy", max_bytes=1000)
        # nothing half-written is left in the cache directory
        assert fetcher._dir is not None and list(fetcher._dir.iterdir()) == []
        # a failure is not cached: the next call asks again
        with pytest.raises(errors.ArtefactUnavailable):
            await fetcher.fetch(f"{server.url}/busy", max_bytes=1000)
        assert [p for p, _ in server.hits].count("/busy") == 2
    finally:
        fetcher.close()
    closed = f"{server.url.rsplit(':', 1)[0]}:1/k3s"
    with pytest.raises(errors.ArtefactUnavailable, match="cannot download"):
        await HttpArtefactFetcher(connect_timeout_s=2).fetch(closed, max_bytes=1000)


async def test_tls_is_verified(tmp_path: Path) -> None:
    _ca, cert, key = ensure_certs(tmp_path / "tls", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    s = Server()
    async for _ in _serve(s, context):
        fetcher = HttpArtefactFetcher()
        try:
            # the lab CA is not in the system trust store: the download is refused, not the check skipped
            with pytest.raises(errors.ArtefactRejected, match="TLS verification failed"):
                await fetcher.fetch(f"{s.url}/k3s", max_bytes=2 << 20)
        finally:
            fetcher.close()
    assert s.hits == []
