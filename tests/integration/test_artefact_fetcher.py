"""The operator's artefact fetcher (adapters/artefacts.py) against a real HTTPS server on loopback.

The server is on 127.0.0.1 with the lab's CA, so the fetcher is built as an operator admin would for an
internal mirror: 127.0.0.1 on its allow-list, the CA as an extra trust anchor.
"""

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
from k3s_deploy.netpolicy import AllowList
from k3s_deploy_lab.pvesim.tls import ensure_certs

pytestmark = pytest.mark.integration

BINARY = b"\x7fELF" + bytes(range(256)) * 4096  # 1 MiB + 4 bytes
SUM = hashlib.sha256(BINARY).hexdigest()
LOOPBACK = AllowList.parse(["127.0.0.1"])


class Server:
    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []  # (path, user agent)
        self.url = ""
        self.ca = Path()

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


def tls(directory: Path) -> tuple[Path, ssl.SSLContext]:
    ca, cert, key = ensure_certs(directory, "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca, context


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    s = Server()
    s.ca, context = tls(tmp_path / "tls")
    async for _ in _serve(s, context):
        yield s


def trusting(server: Server, **kwargs: object) -> HttpArtefactFetcher:
    return HttpArtefactFetcher(LOOPBACK, extra_ca=server.ca, **kwargs)  # type: ignore[arg-type]


async def test_concurrent_nodes_share_one_download(server: Server) -> None:
    fetcher = trusting(server)
    try:
        got = await asyncio.gather(
            *(fetcher.fetch(f"{server.url}/k3s", max_bytes=2 << 20, sha256=SUM) for _ in range(5))
        )
        again = await fetcher.fetch(f"{server.url}/k3s", max_bytes=2 << 20, sha256=SUM)
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
    fetcher = trusting(server)
    try:
        with pytest.raises(errors.ArtefactRejected, match="larger than the limit of 1000 bytes"):
            await fetcher.fetch(f"{server.url}/k3s", max_bytes=1000, sha256=SUM)
        with pytest.raises(errors.ArtefactRejected, match="HTTP 404"):
            await fetcher.fetch(f"{server.url}/nothing", max_bytes=1000, sha256=SUM)
        with pytest.raises(errors.ArtefactUnavailable, match="HTTP 503"):
            await fetcher.fetch(f"{server.url}/busy", max_bytes=1000, sha256=SUM)
        # nothing half-written is left in the cache directory
        assert fetcher._dir is not None and list(fetcher._dir.iterdir()) == []
        # a failure is not cached: the next call asks again
        with pytest.raises(errors.ArtefactUnavailable):
            await fetcher.fetch(f"{server.url}/busy", max_bytes=1000, sha256=SUM)
        assert [p for p, _ in server.hits].count("/busy") == 2
    finally:
        fetcher.close()
    closed = f"{server.url.rsplit(':', 1)[0]}:1/k3s"
    with pytest.raises(errors.ArtefactUnavailable, match="cannot download"):
        await trusting(server, connect_timeout_s=2).fetch(closed, max_bytes=1000, sha256=SUM)


async def test_tls_is_verified(server: Server) -> None:
    # the lab CA is not in the system trust store: the download is refused, not the check skipped
    fetcher = HttpArtefactFetcher(LOOPBACK)
    try:
        with pytest.raises(errors.ArtefactRejected, match="TLS verification failed"):
            await fetcher.fetch(f"{server.url}/k3s", max_bytes=2 << 20, sha256=SUM)
    finally:
        fetcher.close()
    assert server.hits == []
