"""T2, a tenant, points the operator's own requests at what only the operator's pod can reach.

Air-gap downloads (``fetchFrom: Operator``) and the channel server are URLs a tenant writes. Each test
starts a loopback listener that counts TCP connections, points a URL (or a redirect) at it, and checks
that the operator's adapter never connects and names the rule it applied. The listeners use addresses
in 127.0.0.0/8 other than 127.0.0.1, so no allow-list entry for 127.0.0.1 covers them.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from k3s_deploy import errors
from k3s_deploy.adapters.artefacts import HttpArtefactFetcher
from k3s_deploy.adapters.channels import HttpChannelServer
from k3s_deploy.netpolicy import AllowList
from k3s_deploy_lab.pvesim.tls import ensure_certs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BODY = b"k3s" * 1000
SUM = hashlib.sha256(BODY).hexdigest()


class Counter:
    """A TCP listener on a loopback address that counts connections and closes them."""

    def __init__(self, host: str) -> None:
        self._sock = socket.create_server((host, 0))
        self.port = self._sock.getsockname()[1]
        self.host = host
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def base(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, scheme: str = "https", host: str | None = None) -> str:
        return f"{scheme}://{host or self.host}:{self.port}/k3s"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def target() -> Iterator[Counter]:
    counter = Counter("127.0.0.2")
    yield counter
    counter.close()


class Mirror:
    """An https server on 127.0.0.1 (the lab CA) that serves BODY and redirects where told."""

    def __init__(self) -> None:
        self.url = ""
        self.ca = Path()
        self.redirect_to = ""
        self.hits = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if request.path == "/redirect":
            raise web.HTTPFound(self.redirect_to)
        if request.path == "/huge":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(64):
                await response.write(b"x" * 65536)
            return response
        return web.Response(body=BODY)


@pytest.fixture
async def mirror(tmp_path: Path) -> AsyncIterator[Mirror]:
    ca, cert, key = ensure_certs(tmp_path / "tls", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    m = Mirror()
    m.ca = ca
    app = web.Application()
    app.router.add_get("/{tail:.*}", m.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
    m.url = f"https://127.0.0.1:{port}"
    yield m
    await runner.cleanup()


def fetcher(entries: list[str], **kwargs: object) -> HttpArtefactFetcher:
    return HttpArtefactFetcher(AllowList.parse(entries), **kwargs)  # type: ignore[arg-type]


async def refused(f: HttpArtefactFetcher, url: str) -> errors.K3sDeployError:
    with pytest.raises(errors.PermanentError) as caught:
        await f.fetch(url, max_bytes=1 << 20, sha256=SUM)
    f.close()
    return caught.value


async def test_off_without_an_allow_list(target: Counter) -> None:
    error = await refused(fetcher([]), target.url())
    assert error.reason == "FetchFromOperatorDisabled" and "K3SD_FETCH_ALLOWED_HOSTS" in error.message
    assert target.connections == 0


async def test_a_loopback_url_is_never_connected_to(target: Counter) -> None:
    for url in (target.url(), target.url(host="2130706434"), target.url(host="[::ffff:127.0.0.2]")):
        error = await refused(fetcher(["*"]), url)
        assert error.reason == "LoopbackAddressRefused", (url, error)
    error = await refused(fetcher(["*"]), target.url(host="localhost"))  # a name for 127.0.0.1
    assert error.reason == "LoopbackAddressRefused"
    assert target.connections == 0


async def test_only_https_and_listed_hosts(target: Counter) -> None:
    error = await refused(fetcher(["*"]), target.url(scheme="http"))
    assert error.reason == "HttpsRequired"
    error = await refused(fetcher(["mirror.example.com"]), target.url())
    assert error.reason == "HostNotAllowed" and "127.0.0.2" in error.message
    assert target.connections == 0


async def test_every_redirect_is_checked(mirror: Mirror, target: Counter) -> None:
    allowed = ["*", "127.0.0.1"]  # the mirror's address is listed; the target's is not
    mirror.redirect_to = target.url()
    error = await refused(fetcher(allowed, extra_ca=mirror.ca), f"{mirror.url}/redirect")
    assert error.reason == "LoopbackAddressRefused"
    mirror.redirect_to = target.url(scheme="http")
    error = await refused(fetcher(allowed, extra_ca=mirror.ca), f"{mirror.url}/redirect")
    assert error.reason == "HttpsRequired"
    mirror.redirect_to = target.url()
    error = await refused(fetcher(["127.0.0.1"], extra_ca=mirror.ca), f"{mirror.url}/redirect")
    assert error.reason == "HostNotAllowed"
    assert mirror.hits == 3 and target.connections == 0
    # a redirect to a listed host is followed
    mirror.redirect_to = f"{mirror.url}/k3s"
    f = fetcher(allowed, extra_ca=mirror.ca)
    try:
        got = await f.fetch(f"{mirror.url}/redirect", max_bytes=1 << 20, sha256=SUM)
        assert got.path.read_bytes() == BODY
    finally:
        f.close()


async def test_size_budget_and_checksum(mirror: Mirror, tmp_path: Path) -> None:
    space = tmp_path / "downloads"
    space.mkdir()
    f = fetcher(["127.0.0.1"], extra_ca=mirror.ca, directory=space, budget_bytes=64 << 20)
    try:
        # streamed without a length, cut at the cap, nothing left behind
        with pytest.raises(errors.ArtefactRejected, match="larger than the limit of 1048576 bytes"):
            await f.fetch(f"{mirror.url}/huge", max_bytes=1 << 20, sha256=SUM)
        assert [p for d in space.iterdir() for p in d.iterdir()] == []
        with pytest.raises(errors.ArtefactRejected, match="expected"):
            await f.fetch(f"{mirror.url}/k3s", max_bytes=1 << 20, sha256="0" * 64)
        ok = await f.fetch(f"{mirror.url}/k3s", max_bytes=1 << 20, sha256=SUM)
        assert ok.path.parent.parent == space
    finally:
        f.close()
    # downloads in flight and cached files never take more than the budget
    mib = 1 << 20
    small = fetcher(["127.0.0.1"], extra_ca=mirror.ca, directory=space, budget_bytes=mib + 2000)
    try:
        first = await small.fetch(f"{mirror.url}/k3s?a", max_bytes=mib, sha256=SUM)
        second = await small.fetch(f"{mirror.url}/k3s?b", max_bytes=mib, sha256=SUM)
        assert not first.path.exists() and second.path.exists()  # the older file made room
        slow = asyncio.ensure_future(small.fetch(f"{mirror.url}/huge", max_bytes=mib, sha256=SUM))
        await asyncio.sleep(0)
        assert not second.path.exists()
        with pytest.raises(errors.ArtefactUnavailable, match="fill the operator's download space"):
            await small.fetch(f"{mirror.url}/k3s?c", max_bytes=mib, sha256=SUM)
        with pytest.raises(errors.ArtefactRejected, match="larger than the limit"):
            await slow
    finally:
        small.close()


async def test_channel_server_follows_the_same_address_rule(target: Counter) -> None:
    for allowed, url in (
        (["127.0.0.1"], target.url(scheme="http")),
        ([], target.url(host="localhost")),
    ):
        with pytest.raises(errors.AddressRefused) as caught:
            await HttpChannelServer(AllowList.parse(allowed)).fetch(url)
        assert caught.value.reason == "LoopbackAddressRefused", url
        assert not caught.value.transient
    with pytest.raises(errors.AddressRefused) as metadata:
        await HttpChannelServer().fetch("http://169.254.169.254/latest/meta-data/")
    assert metadata.value.reason == "MetadataAddressRefused"
    assert target.connections == 0
