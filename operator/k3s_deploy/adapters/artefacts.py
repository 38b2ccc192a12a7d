"""ArtefactFetcher over aiohttp: stream each URL once into a private temp dir, TLS verified.

Concurrent callers for one URL share one download (a node-by-node install of N nodes costs one fetch);
finished files stay cached for the life of the process, the oldest dropped beyond ``keep`` entries.
The URL is the cache key: air-gap artefact URLs name their release (``.../download/<version>/k3s``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import aiohttp

from k3s_deploy import errors
from k3s_deploy.ports.artefacts import Artefact

_CHUNK = 1 << 20
USER_AGENT = "k3s-deploy-operator"


class HttpArtefactFetcher:
    def __init__(self, *, timeout_s: float = 600.0, connect_timeout_s: float = 15.0, keep: int = 8) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._keep = keep
        self._dir: Path | None = None
        self._done: OrderedDict[str, Artefact] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Artefact]] = {}

    async def fetch(self, url: str, *, max_bytes: int, sha256: str | None = None) -> Artefact:
        found = self._done.get(url)
        if found is not None and found.path.exists():
            self._done.move_to_end(url)
            _check_sum(found, sha256)
            return found
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.ensure_future(self._download(url, max_bytes))
            self._inflight[url] = task
            task.add_done_callback(lambda _t: self._inflight.pop(url, None))
        # shield: one cancelled waiter must not cancel the download the other nodes wait for
        artefact = await asyncio.shield(task)
        _check_sum(artefact, sha256)
        return artefact

    async def _download(self, url: str, max_bytes: int) -> Artefact:
        directory = self._cache_dir()
        fd, name = tempfile.mkstemp(dir=directory, prefix="artefact-")
        os.close(fd)
        path = Path(name)
        digest = hashlib.sha256()
        size = 0
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout, headers={"User-Agent": USER_AGENT}) as session,
                session.get(url) as response,
            ):
                if response.status >= 500 or response.status == 429:
                    raise errors.ArtefactUnavailable(f"{url} answered HTTP {response.status}")
                if response.status != 200:
                    raise errors.ArtefactRejected(
                        f"{url} answered HTTP {response.status}: check spec.k3s.installSource.airGap"
                    )
                if response.content_length is not None and response.content_length > max_bytes:
                    raise errors.ArtefactRejected(_too_large(url, max_bytes))
                out = await asyncio.to_thread(path.open, "wb")
                try:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > max_bytes:
                            raise errors.ArtefactRejected(_too_large(url, max_bytes))
                        digest.update(chunk)
                        await asyncio.to_thread(out.write, chunk)
                finally:
                    await asyncio.to_thread(out.close)
        except aiohttp.ClientSSLError as exc:
            await asyncio.to_thread(_discard, path)
            raise errors.ArtefactRejected(
                f"cannot download {url}: TLS verification failed ({exc}); the mirror needs a certificate "
                "the operator's CA bundle trusts"
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            await asyncio.to_thread(_discard, path)
            raise errors.ArtefactUnavailable(f"cannot download {url}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            await asyncio.to_thread(_discard, path)
            raise
        artefact = Artefact(url=url, path=path, size=size, sha256=digest.hexdigest())
        self._remember(artefact)
        return artefact

    def _remember(self, artefact: Artefact) -> None:
        old = self._done.pop(artefact.url, None)
        if old is not None:
            _discard(old.path)
        self._done[artefact.url] = artefact
        while len(self._done) > self._keep:
            _url, dropped = self._done.popitem(last=False)
            _discard(dropped.path)

    def _cache_dir(self) -> Path:
        if self._dir is None or not self._dir.exists():
            self._dir = Path(tempfile.mkdtemp(prefix="k3s-deploy-artefacts-"))
        return self._dir

    def close(self) -> None:
        """Remove the cached files (tests; the operator keeps them until it exits)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._done.clear()


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _too_large(url: str, max_bytes: int) -> str:
    return f"{url} is larger than the limit of {max_bytes} bytes"


def _check_sum(artefact: Artefact, sha256: str | None) -> None:
    if sha256 is not None and artefact.sha256 != sha256.lower():
        raise errors.ArtefactRejected(
            f"{artefact.url} has sha256 {artefact.sha256}, expected {sha256.lower()}"
        )
