"""The shared Secret cache: one read per Secret per interval, whatever the number of askers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from k3s_deploy.services.secret_cache import SecretCachingGateway


class CountingGateway:
    """A KubeGateway that counts Secret reads and can hold them (to make askers overlap)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {("ns", "creds"): {"url": b"https://a"}}
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.patched: list[tuple[str, Mapping[str, Any]]] = []

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        self.reads += 1
        await self.gate.wait()
        found = self.secrets.get((namespace, name))
        return dict(found) if found is not None else None

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.patched.append((name, status))

    async def patch_annotations(
        self, group: str, version: str, plural: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        self.patched.append((name, annotations))

    async def post_event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        self.patched.append((reason, {"message": message}))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_many_askers_share_one_read_until_it_ages() -> None:
    inner, clock = CountingGateway(), Clock()
    cache = SecretCachingGateway(inner, max_age=54.0, clock=clock)
    inner.gate.clear()
    askers = [asyncio.create_task(cache.read_secret("ns", "creds")) for _ in range(50)]
    await asyncio.sleep(0)
    inner.gate.set()
    results = await asyncio.gather(*askers)
    assert inner.reads == 1 and all(r == {"url": b"https://a"} for r in results)
    clock.now += 53.0
    await cache.read_secret("ns", "creds")
    assert inner.reads == 1
    inner.secrets[("ns", "creds")] = {"url": b"https://rotated"}
    clock.now += 2.0
    assert await cache.read_secret("ns", "creds") == {"url": b"https://rotated"}
    assert inner.reads == 2


async def test_a_missing_secret_is_asked_again_and_found_once_created() -> None:
    inner = CountingGateway()
    cache = SecretCachingGateway(inner, max_age=54.0, clock=Clock())
    assert await cache.read_secret("ns", "later") is None
    assert await cache.read_secret("ns", "later") is None
    assert inner.reads == 2
    inner.secrets[("ns", "later")] = {"url": b"https://b"}
    assert await cache.read_secret("ns", "later") == {"url": b"https://b"}


async def test_secrets_are_cached_per_namespace_and_name_and_copies_are_returned() -> None:
    inner = CountingGateway()
    inner.secrets[("other", "creds")] = {"url": b"https://other"}
    cache = SecretCachingGateway(inner, max_age=54.0, clock=Clock())
    first = await cache.read_secret("ns", "creds")
    assert first is not None
    first["url"] = b"tampered"
    assert await cache.read_secret("ns", "creds") == {"url": b"https://a"}
    assert await cache.read_secret("other", "creds") == {"url": b"https://other"}
    assert inner.reads == 2
    cache.invalidate("ns", "creds")
    await cache.read_secret("ns", "creds")
    assert inner.reads == 3


async def test_a_failed_read_is_not_cached() -> None:
    inner = CountingGateway()
    cache = SecretCachingGateway(inner, max_age=54.0, clock=Clock())
    calls = 0

    async def flaky(namespace: str, name: str) -> dict[str, bytes] | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("apiserver down")
        return {"url": b"https://a"}

    inner.read_secret = flaky  # type: ignore[method-assign]
    try:
        await cache.read_secret("ns", "creds")
    except ConnectionError:
        pass
    else:
        raise AssertionError("the failure must reach the caller")
    assert await cache.read_secret("ns", "creds") == {"url": b"https://a"}
    assert calls == 2


async def test_writes_pass_through_unchanged() -> None:
    inner = CountingGateway()
    cache = SecretCachingGateway(inner, max_age=54.0)
    await cache.patch_status("g", "v", "p", "ns", "vm", {"vmid": 1})
    await cache.patch_annotations("g", "v", "p", "ns", "vm", {"a": "b"})
    await cache.post_event({"metadata": {}}, type_="Normal", reason="Started", message="ok")
    assert inner.patched == [("vm", {"vmid": 1}), ("vm", {"a": "b"}), ("Started", {"message": "ok"})]
