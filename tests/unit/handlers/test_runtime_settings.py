"""Process-level runtime pieces: handing free memory back, the peering identity and priority."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
import weakref

import pytest

from k3s_deploy import runner
from k3s_deploy.runner import collect_and_freeze, peering_identity, peering_priority, release_free_memory
from k3s_deploy.settings import OperatorSettings


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_memory_is_handed_back_to_the_os_on_glibc() -> None:
    def resident_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    chunks = [bytearray(16 * 1024) for _ in range(6000)]  # ~94 MiB of glibc heap (below mmap size)
    keep = chunks[::16]  # a few survivors pin the heap: free() alone cannot shrink it
    del chunks
    before = resident_mib()
    assert release_free_memory() is True
    assert before - resident_mib() > 40
    assert len(keep) == 375


async def test_memory_is_released_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    fulls: list[bool] = []
    monkeypatch.setattr(runner, "release_free_memory", lambda: calls.append(1.0) or True)
    monkeypatch.setattr(runner, "FULL_COLLECTION_EVERY", 2)

    def record(*, full: bool) -> int:
        fulls.append(full)
        return 0

    monkeypatch.setattr(runner, "collect_and_freeze", record)
    task = asyncio.create_task(runner.release_memory_periodically(0.02))
    await asyncio.sleep(0.11)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert 3 <= len(calls) <= 6
    assert fulls[:4] == [True, False, True, False][: len(fulls[:4])] and len(fulls) == len(calls)


def test_peering_identity_is_the_pod_name_when_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "k3s-deploy-operator-abc")
    assert peering_identity() == "k3s-deploy-operator-abc"
    monkeypatch.delenv("POD_ID")
    first = peering_identity()
    assert "@" in first and first.count("/") == 2


def test_peering_priority_is_the_configured_one_or_random() -> None:
    assert peering_priority(OperatorSettings(peering_priority=7)) == 7
    drawn = {peering_priority(OperatorSettings()) for _ in range(20)}
    assert len(drawn) > 1 and all(1 <= p <= 2**30 for p in drawn)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_freezing_keeps_collecting_new_garbage_and_a_full_pass_frees_frozen_cycles() -> None:
    gc.disable()  # only our calls collect in this test
    try:
        holder = [Node(), Node()]
        holder[0].other, holder[1].other = holder[1], holder[0]
        frozen = weakref.ref(holder[0])
        assert collect_and_freeze(full=True) > 0
        holder.clear()  # the cycle becomes garbage while frozen
        young = cycle()
        collect_and_freeze(full=False)
        assert young() is None  # garbage made after the freeze is still collected
        assert frozen() is not None  # a frozen cycle waits ...
        collect_and_freeze(full=True)
        assert frozen() is None  # ... for the next full pass
    finally:
        gc.unfreeze()
        gc.enable()
