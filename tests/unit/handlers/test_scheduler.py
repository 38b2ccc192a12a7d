"""The shared ProxmoxVM scheduler, on a real event loop with short delays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from k3s_deploy.errors import KubeUnavailable
from k3s_deploy.handlers.scheduler import Scheduler, backoff


class Passes:
    """Records passes (start order, overlap per key and overall) and returns per-key delays."""

    def __init__(self, delay: float = 10.0, hold: float = 0.0) -> None:
        self.delay = delay
        self.hold = hold
        self.delays: dict[str, float] = {}
        self.started: list[str] = []
        self.running: set[str] = set()
        self.overlap_same_key = False
        self.most_at_once = 0
        self.fail: dict[str, BaseException] = {}

    async def __call__(self, key: str) -> float:
        self.overlap_same_key |= key in self.running
        self.running.add(key)
        self.most_at_once = max(self.most_at_once, len(self.running))
        self.started.append(key)
        try:
            await asyncio.sleep(self.hold)
            if key in self.fail:
                raise self.fail[key]
            return self.delays.pop(key, self.delay)  # a per-key delay applies to one pass
        finally:
            self.running.discard(key)

    def count(self, key: str) -> int:
        return self.started.count(key)


@asynccontextmanager
async def running(passes: Passes, **kwargs: float) -> AsyncIterator[Scheduler]:
    scheduler = Scheduler(passes, resync=kwargs.pop("resync", 10.0), workers=int(kwargs.pop("workers", 4)))
    scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop()


async def until(predicate: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_first_pass_at_once_then_after_the_delay_the_pass_asked_for() -> None:
    passes = Passes(delay=0.15)
    async with running(passes) as scheduler:
        started = time.monotonic()
        scheduler.add("a", "ns/a")
        await until(lambda: passes.count("a") == 1, within=0.1)
        await until(lambda: passes.count("a") == 2)
        assert time.monotonic() - started >= 0.14
        await asyncio.sleep(0.05)
        assert passes.count("a") == 2


async def test_due_objects_run_in_due_order() -> None:
    passes = Passes()
    passes.delays = {"late": 0.25, "early": 0.05, "middle": 0.15}
    async with running(passes, workers=1) as scheduler:
        for key in ("late", "early", "middle"):
            scheduler.add(key, key)
        await until(lambda: len(passes.started) >= 6)
        assert len(passes.started) == 6 and passes.started[3:] == ["early", "middle", "late"]


async def test_wake_runs_a_sleeping_object_at_once() -> None:
    passes = Passes(delay=30.0)
    async with running(passes) as scheduler:
        scheduler.add("a", "a")
        await until(lambda: passes.count("a") == 1)
        await asyncio.sleep(0.02)
        scheduler.wake("a")
        await until(lambda: passes.count("a") == 2, within=0.2)


async def test_wake_during_a_pass_runs_once_more_right_after_and_never_overlaps() -> None:
    passes = Passes(delay=30.0, hold=0.1)
    async with running(passes) as scheduler:
        scheduler.add("a", "a")
        await until(lambda: "a" in passes.running)
        scheduler.wake("a")
        scheduler.wake("a")
        await until(lambda: passes.count("a") == 2)
        await until(lambda: not passes.running)
        await asyncio.sleep(0.15)
        assert passes.count("a") == 2 and not passes.overlap_same_key


async def test_passes_in_flight_are_bounded() -> None:
    passes = Passes(delay=30.0, hold=0.05)
    async with running(passes, workers=3) as scheduler:
        for i in range(12):
            scheduler.add(f"o{i}", f"o{i}")
        await until(lambda: len(passes.started) == 12)
        assert passes.most_at_once == 3


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 60.0) for n in range(1, 6)] == [10.0, 20.0, 40.0, 60.0, 60.0]


@pytest.mark.parametrize("error", [KubeUnavailable("apiserver down"), RuntimeError("a bug")])
async def test_a_failing_pass_is_retried_with_backoff_and_others_carry_on(error: BaseException) -> None:
    passes = Passes(delay=30.0)
    passes.fail["bad"] = error
    async with running(passes, resync=0.1) as scheduler:  # backoff capped at the resync interval
        scheduler.add("bad", "bad")
        scheduler.add("good", "good")
        await until(lambda: passes.count("bad") >= 3)
        assert passes.count("good") == 1  # the healthy object sleeps its own 30 s
        del passes.fail["bad"]
        await until(lambda: passes.count("bad") >= 4)
        settled = passes.count("bad")
        await asyncio.sleep(0.25)
        assert passes.count("bad") == settled  # success: back to the delay the pass asked for


async def test_remove_stops_future_passes_and_lets_the_running_one_finish() -> None:
    passes = Passes(delay=0.05, hold=0.1)
    async with running(passes) as scheduler:
        scheduler.add("a", "a")
        await until(lambda: "a" in passes.running)
        scheduler.remove("a")
        assert "a" not in scheduler
        await until(lambda: not passes.running)
        await asyncio.sleep(0.2)
        assert passes.count("a") == 1
        scheduler.wake("a")  # unknown keys are ignored
        await asyncio.sleep(0.05)
        assert passes.count("a") == 1


async def test_pause_holds_every_new_pass_until_resumed() -> None:
    passes = Passes(delay=0.05)
    async with running(passes) as scheduler:
        scheduler.pause(True)
        scheduler.add("a", "a")
        scheduler.add("b", "b")
        await asyncio.sleep(0.15)
        assert passes.started == []
        scheduler.pause(False)
        await until(lambda: passes.count("a") >= 2 and passes.count("b") >= 2)
        scheduler.pause(True)
        await asyncio.sleep(0.02)
        held = len(passes.started)
        await asyncio.sleep(0.15)
        assert len(passes.started) == held


async def test_stop_cancels_passes_in_flight() -> None:
    passes = Passes(hold=10.0)
    scheduler = Scheduler(passes, resync=10.0, workers=2)
    scheduler.start()
    scheduler.add("a", "a")
    await until(lambda: "a" in passes.running)
    await asyncio.wait_for(scheduler.stop(), timeout=1.0)
    assert not passes.running


async def test_log_records_name_the_object(caplog: pytest.LogCaptureFixture) -> None:
    passes = Passes(delay=30.0)
    passes.fail["a"] = RuntimeError("a bug")
    ref = {"kind": "ProxmoxVM", "namespace": "ns", "name": "a"}
    with caplog.at_level("INFO", logger="k3s_deploy.handlers.scheduler"):
        async with running(passes) as scheduler:
            scheduler.add("a", "ns/a", ref)
            await until(lambda: any(r.levelname == "ERROR" for r in caplog.records))
    first, crashed = caplog.records[0], caplog.records[-1]
    assert first.getMessage().startswith("First reconcile pass of ns/a")
    assert "crashed" in crashed.getMessage()
    assert getattr(first, "k8s_ref", None) == ref and getattr(crashed, "k8s_ref", None) == ref
