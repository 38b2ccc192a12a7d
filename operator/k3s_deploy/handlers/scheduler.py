"""One shared scheduler for every ProxmoxVM: a heap of due times and a bounded set of passes in flight.

It replaces one kopf daemon per object. A daemon per object kept, per object, an asyncio task with its
coroutine stack, kopf's daemon records (cause, patch, logger, stopper) and kopf's live copy of the
whole body (managedFields included): most of the operator's memory at a thousand objects, for objects
that sleep 60 s between passes of a few milliseconds. Here an idle object is one small entry and one
heap item. The guarantees stay those of the per-object loop:

- one pass at a time per object (an object is never dispatched while its pass runs);
- a wake-up runs the object at once, or right after its running pass;
- the pass returns the delay before the next; failures back off exponentially up to the resync
  interval; a bug is logged and retried, never ends the scheduling of the object;
- ``remove`` stops future passes (a running one finishes); ``pause`` holds every new pass (HA).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from k3s_deploy import errors
from k3s_deploy.errors import K3sDeployError

log = logging.getLogger(__name__)


# The management cluster itself failed a pass (a status write): start at 10 s.
FIRST_RETRY_S = 10.0


def backoff(failures: int, cap: float) -> float:
    """Seconds before retrying after ``failures`` failed passes in a row: 10, 20, 40, ... up to ``cap``."""
    return errors.backoff(failures, cap, first=FIRST_RETRY_S)


@dataclass
class _Entry:
    name: str
    ref: dict[str, str]  # kind/namespace/name: our log records carry it as kopf's do (``k8s_ref``)
    due: float = 0.0
    passes: int = 0
    running: bool = False
    again: bool = False
    failures: int = 0


class Scheduler:
    """Runs ``run_pass(key)`` for every added key whenever it is due, at most ``workers`` at once."""

    def __init__(
        self,
        run_pass: Callable[[str], Awaitable[float]],
        *,
        resync: float,
        workers: int = 16,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._run_pass = run_pass
        self._resync = resync
        self._slots = asyncio.Semaphore(workers)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._paused = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None

    # ----- what handlers call -------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def running(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.running

    def add(self, key: str, name: str, ref: dict[str, str] | None = None) -> None:
        """Start scheduling ``key`` (its first pass is due at once); no-op when already known."""
        if key not in self._entries:
            entry = self._entries[key] = _Entry(name, ref or {})
            self._push(key, entry, self._now())

    def wake(self, key: str) -> None:
        """Run ``key`` now, or right after its running pass."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.running:
            entry.again = True
        elif entry.due > self._now():
            self._push(key, entry, self._now())

    def remove(self, key: str) -> None:
        """No pass of ``key`` starts any more (one already running finishes)."""
        self._entries.pop(key, None)

    def pause(self, paused: bool) -> None:
        """Hold (True) or release (False) every new pass; running passes finish."""
        self._paused = paused
        self._changed.set()

    @property
    def paused(self) -> bool:
        return self._paused

    # ----- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name="proxmoxvm scheduler")

    async def stop(self) -> None:
        """Cancel the dispatcher and every pass in flight, and wait for them."""
        tasks = [t for t in (self._dispatcher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatcher = None

    # ----- inside -------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _push(self, key: str, entry: _Entry, due: float) -> None:
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._changed.set()

    async def _dispatch(self) -> None:
        while True:
            self._changed.clear()
            now = self._now()
            while self._heap and not self._paused and self._heap[0][0] <= now:
                due, _, key = heapq.heappop(self._heap)
                entry = self._entries.get(key)
                if entry is None or entry.running or entry.due != due:
                    continue  # removed, or superseded by a later push
                await self._slots.acquire()
                if self._entries.get(key) is not entry:  # removed while we waited for a slot
                    self._slots.release()
                    continue
                entry.running = True
                task = asyncio.create_task(self._one(key, entry), name=f"pass of {entry.name}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = None if (self._paused or not self._heap) else max(0.0, self._heap[0][0] - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()

    async def _one(self, key: str, entry: _Entry) -> None:
        delay = self._resync
        extra = {"k8s_ref": entry.ref}
        if not entry.passes:
            log.info("First reconcile pass of %s in this process", entry.name, extra=extra)
        entry.passes += 1
        try:
            delay = await self._run_pass(key)
            entry.failures = 0
        except K3sDeployError as exc:  # the management cluster itself failed us (status write, ...)
            entry.failures += 1
            delay = backoff(entry.failures, self._resync)
            log.warning("reconcile of %s failed, retrying in %.0fs: %s", entry.name, delay, exc, extra=extra)
        except Exception:  # a bug must not end the object's scheduling: log it, back off, try again
            entry.failures += 1
            delay = backoff(entry.failures, self._resync)
            log.exception("reconcile of %s crashed, retrying in %.0fs", entry.name, delay, extra=extra)
        finally:
            entry.running = False
            self._slots.release()
            if self._entries.get(key) is entry:
                if entry.again:
                    entry.again = False
                    delay = 0.0
                self._push(key, entry, self._now() + delay)
