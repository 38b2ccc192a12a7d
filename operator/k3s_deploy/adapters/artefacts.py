"""ArtefactFetcher over aiohttp: stream each URL once into a private directory, TLS verified.

Downloads happen on a tenant's behalf, so they are fenced (docs/security.md): off unless the operator
was started with ``fetchAllowedHosts``; https only, on every redirect too; the host of every hop must
be listed; the address rule of ``netpolicy`` holds after resolution (guarded_http.py); every artefact
needs its sha256. The files go to ``directory`` (in the pod: an emptyDir sized for K3s artefacts) and
all files, cached or in flight, stay within ``budget_bytes``, so a download never fills the volume.

Concurrent callers for one URL share one download (a node-by-node install of N nodes costs one fetch);
finished files stay cached for the life of the process, the oldest dropped beyond ``keep`` entries or
when the budget needs room. The URL is the cache key: air-gap artefact URLs name their release.
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
from yarl import URL

from k3s_deploy import errors
from k3s_deploy.adapters import guarded_http
from k3s_deploy.netpolicy import AddressPolicy, AllowList
from k3s_deploy.ports.artefacts import Artefact

_CHUNK = 1 << 20
USER_AGENT = "k3s-deploy-operator"
SETTING = "fetchAllowedHosts (K3SD_FETCH_ALLOWED_HOSTS, --fetch-allowed-hosts)"
DEFAULT_BUDGET = 1536 << 20


class HttpArtefactFetcher:
    def __init__(
        self,
        allowed: AllowList,
        *,
        directory: Path | None = None,
        budget_bytes: int = DEFAULT_BUDGET,
        extra_ca: Path | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 15.0,
        keep: int = 8,
    ) -> None:
        self._allowed = allowed
        self._policy = AddressPolicy(
            "download", allowed, fix=f"an operator admin can list the address or its network in {SETTING}"
        )
        self._parent = directory
        self._budget = budget_bytes
        self._ssl = guarded_http.ssl_context(extra_ca)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._keep = keep
        self._dir: Path | None = None
        self._done: OrderedDict[str, Artefact] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Artefact]] = {}
        self._reserved: dict[str, int] = {}

    async def fetch(self, url: str, *, max_bytes: int, sha256: str) -> Artefact:
        if not self._allowed.enabled:
            raise errors.ArtefactRejected(
                f"cannot download {url}: downloads by the operator (installSource.airGap.fetchFrom: "
                f"Operator) are off; an operator admin enables them by listing the mirror hosts in {SETTING}, "
                "or set fetchFrom: Node",
                reason="FetchFromOperatorDisabled",
            )
        if not sha256:
            raise errors.ArtefactRejected(
                f"{url} has no sha256 in the spec; the operator downloads only artefacts with a known "
                "checksum", reason="ArtefactChecksumMissing",
            )  # fmt: skip
        found = self._done.get(url)
        if found is not None and found.path.exists():
            self._done.move_to_end(url)
            _check_sum(found, sha256)
            return found
        task = self._inflight.get(url)
        if task is None:
            self._reserve(url, max_bytes)
            task = asyncio.ensure_future(self._download(url, max_bytes))
            self._inflight[url] = task
            task.add_done_callback(lambda _t: (self._inflight.pop(url, None), self._reserved.pop(url, None)))
        # shield: one cancelled waiter must not cancel the download the other nodes wait for
        artefact = await asyncio.shield(task)
        _check_sum(artefact, sha256)
        return artefact

    def _reserve(self, url: str, max_bytes: int) -> None:
        """Make room for a download of up to ``max_bytes``: drop the oldest cached files until cached
        plus in-flight reservations fit the budget; refuse for now when downloads in flight fill it."""
        want = min(max_bytes, self._budget)
        while self._done and self._used() + want > self._budget:
            _url, dropped = self._done.popitem(last=False)
            _discard(dropped.path)
        if self._used() + want > self._budget:
            raise errors.ArtefactUnavailable(
                f"cannot download {url} yet: downloads in flight fill the operator's download space "
                f"({self._budget} bytes); retrying"
            )
        self._reserved[url] = want

    def _used(self) -> int:
        return sum(a.size for a in self._done.values()) + sum(self._reserved.values())

    def _check_hop(self, url: URL) -> None:
        if url.scheme != "https":
            raise errors.ArtefactRejected(
                f"{url} is not https; the operator downloads only over https (redirects included)",
                reason="HttpsRequired",
            )
        if not self._allowed.admits(url.host or ""):
            raise errors.ArtefactRejected(
                f"{url.host} is not among the hosts the operator may download from; an operator admin "
                f"can add it to {SETTING}",
                reason="HostNotAllowed",
            )

    async def _download(self, url: str, max_bytes: int) -> Artefact:
        limit = min(max_bytes, self._budget)
        directory = self._cache_dir()
        fd, name = tempfile.mkstemp(dir=directory, prefix="artefact-")
        os.close(fd)
        path = Path(name)
        digest = hashlib.sha256()
        size = 0
        headers = {"User-Agent": USER_AGENT}
        try:
            async with (
                guarded_http.session(
                    self._policy, self._timeout, context=self._ssl, headers=headers
                ) as client,
                guarded_http.get(client, url, self._policy, check_hop=self._check_hop) as response,
            ):
                if response.status >= 500 or response.status == 429:
                    raise errors.ArtefactUnavailable(f"{url} answered HTTP {response.status}")
                if response.status != 200:
                    raise errors.ArtefactRejected(
                        f"{url} answered HTTP {response.status}: check spec.k3s.installSource.airGap"
                    )
                if response.content_length is not None and response.content_length > limit:
                    raise errors.ArtefactRejected(_too_large(url, limit))
                out = await asyncio.to_thread(path.open, "wb")
                try:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise errors.ArtefactRejected(_too_large(url, limit))
                        digest.update(chunk)
                        await asyncio.to_thread(out.write, chunk)
                finally:
                    await asyncio.to_thread(out.close)
        except aiohttp.ClientSSLError as exc:
            await asyncio.to_thread(_discard, path)
            raise errors.ArtefactRejected(
                f"cannot download {url}: TLS verification failed ({exc}); the mirror needs a certificate "
                "the operator trusts (system CAs, or fetchCAFile)"
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
            self._dir = Path(tempfile.mkdtemp(prefix="k3s-deploy-artefacts-", dir=self._parent))
        return self._dir

    def close(self) -> None:
        """Remove the cached files (tests; the operator keeps them until it exits)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._done.clear()


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _too_large(url: str, max_bytes: int) -> str:
    return f"{url} is larger than the limit of {max_bytes} bytes (fetchBudgetBytes caps every download)"


def _check_sum(artefact: Artefact, sha256: str) -> None:
    if artefact.sha256 != sha256.lower():
        raise errors.ArtefactRejected(
            f"{artefact.url} has sha256 {artefact.sha256}, expected {sha256.lower()}"
        )
