"""In-flight Proxmox tasks, watched per node: one task-list read per node and interval, whatever N.

Polling each task's own status costs one call per task and second: 50 clones at once were 1069 calls.
``GET /nodes/{node}/tasks?source=all&since=S`` lists every task of the node that started at or after
S, the running ones included (status ``RUNNING``, no ``endtime``), so one read answers for all of
them. A poller per node runs while the node has watched tasks; when a task ends it keeps the result
and wakes the object that waits on it, whose pass then runs at once (no pass runs while it waits).

A task like one the node ran before (same type and vmid: clones of one template) is expected to
last about as long as the shortest such run the node's list showed (``starttime``/``endtime``; the
first read of each poller run asks for a day of history, so this survives a restart of the operator).
After its first ``EARLY`` seconds on the cadence (a short or failing task is seen as before), its
looks go towards ``AHEAD`` of that duration, then to it, each at most twice the age of the one before
(so a task much faster than its history is seen at twice its duration at the latest), then on the
cadence again counted from there. A 20 s clone costs 7 looks, not 8; a 120 s one 10, not 27. A new
task arriving during such a long wait cuts the wait short. Without history: the cadence alone.

The list is a shortcut, never the only truth: a task it does not show (a list cut by ``limit``, a
node that restarted) wakes its object, whose pass then reads that task's own status, as it also does
when the node's last read failed or the watch is older than ``trust`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from k3s_deploy.errors import K3sDeployError
from k3s_deploy.ports.proxmox import ProxmoxClient, TaskStatus
from k3s_deploy.services.cadence import TASK_CAP, TASK_FRACTION, next_look

log = logging.getLogger(__name__)

TASK_POLL = 1.0  # seconds between two reads of one node's task list, at first (cadence.py: then rarer)
WAKE_FALLBACK = 30.0  # a waiting object's own next look, should no wake come (see ``trust``)
KEEP_RESULTS = 600.0  # seconds a finished task's result waits to be taken
HISTORY = 86400  # seconds of the node's past tasks the first read of a poller run asks for
EARLY = 3.0  # seconds a task is looked at on the cadence whatever its history says
AHEAD = 0.9  # with a history, the first late look comes at this share of the expected duration
STRETCH = 1.0  # ... but a look at age a comes next at a * (1 + STRETCH) at the latest
KNOWN_KINDS = 4096  # (type, id) durations kept


@dataclass
class _Watched:
    node: str
    starttime: int  # from the UPID: the node's own clock, so ``since`` needs no clock agreement
    wake: Callable[[], None]
    since: float  # monotonic
    listed: bool = False  # a read of the node's list has shown it running since it was watched


def task_kind(upid: str) -> tuple[str, str]:
    """(type, id) of a UPID, e.g. ("qmclone", "9000"): tasks of one kind take about as long."""
    parts = upid.split(":")
    return (parts[5], parts[6]) if len(parts) >= 9 else ("", upid)


def upid_starttime(upid: str) -> int:
    """The start time (epoch seconds) a UPID carries in hex, or 0 when it cannot be read."""
    parts = upid.split(":")
    try:
        return int(parts[4], 16) if len(parts) >= 9 else 0
    except ValueError:
        return 0


class TaskWatch:
    """The watched tasks of one credential, and a poller per node that has some."""

    def __init__(
        self,
        client: ProxmoxClient,
        *,
        interval: float = TASK_POLL,
        trust: float = WAKE_FALLBACK,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._interval = interval
        self._trust = trust
        self._clock = clock
        self._sleep = sleep
        self._watched: dict[str, _Watched] = {}
        self._finished: dict[str, tuple[TaskStatus, float]] = {}  # result, when the read showing it was sent
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._healthy: dict[str, bool] = {}
        self._durations: dict[tuple[str, str], float] = {}  # the shortest run seen of each kind
        self._kicks: dict[str, asyncio.Event] = {}
        self._waking_at: dict[str, float] = {}  # a poller's end of sleep, while it sleeps
        self.reads = 0

    def watch(self, node: str, upid: str, wake: Callable[[], None]) -> None:
        """Call ``wake`` once the task has ended (or the list lost sight of it)."""
        known = self._watched.get(upid)
        since = known.since if known is not None else self._clock()
        listed = known is not None and known.listed
        self._watched[upid] = _Watched(node, upid_starttime(upid), wake, since, listed)
        poller = self._pollers.get(node)
        if poller is None or poller.done():
            self._pollers[node] = asyncio.create_task(self._poll(node), name=f"tasks of {node}")
        elif known is None and self._waking_at.get(node, 0.0) - self._clock() > self._interval:
            self._kicks[node].set()  # a long wait for an old task: the new one is looked at soon

    def expected(self, upid: str) -> float | None:
        """Seconds the shortest earlier run of this task's kind took on its node, if one was seen."""
        return self._durations.get(task_kind(upid))

    def seen(self, upid: str) -> tuple[TaskStatus, float] | None:
        """The task's state as the node's list showed it, and when that read was sent (a later read
        of anything else sees the task's end); None: read its own status instead.

        A task watched but not yet shown by a read (a pass run again right after the one that
        started it) is running as far as this pass is concerned: the node's next read, due within
        ``interval``, shows it running or ended, or wakes its object when it cannot find it.
        """
        finished = self._finished.pop(upid, None)
        if finished is not None:
            return finished
        known = self._watched.get(upid)
        if known is None or not self._healthy.get(known.node, True):
            return None  # not watched, or the node's last read failed: no answer from the list
        poller = self._pollers.get(known.node)
        if not known.listed and (poller is None or poller.done()):
            return None
        now = self._clock()
        if now - known.since > self._trust:
            return None  # a long wait: confirm now and then with the task's own status
        return TaskStatus(upid=upid, node=known.node, running=True), now

    def forget(self, upid: str) -> None:
        self._watched.pop(upid, None)
        self._finished.pop(upid, None)

    async def _poll(self, node: str) -> None:
        failures, history = 0, HISTORY
        try:
            while True:
                if await self._nap(node, self._pause(node) * 2 ** min(failures, 3)):
                    continue  # cut short by a new task: pace again
                mine = {u: w for u, w in self._watched.items() if w.node == node}
                if not mine:
                    return
                asked = self._clock()
                since = min(w.starttime for w in mine.values()) - history
                try:
                    listed = await self._client.node_tasks(node, since=since, limit=50 + 2 * len(mine))
                except K3sDeployError as exc:
                    failures += 1
                    self._healthy[node] = False
                    log.info(
                        "task list of node %s unavailable (waiting passes read their tasks): %s", node, exc
                    )
                    continue
                self.reads += 1
                failures, history = 0, 0
                self._healthy[node] = True
                self._learn(listed)
                self._settle(mine, {t.upid: t for t in listed}, asked)
        except Exception:  # a bug must not leave objects waiting for a wake that never comes
            log.exception("task poller of node %s failed; waiting objects read their tasks themselves", node)
            self._healthy[node] = False
            for upid, watched in list(self._watched.items()):
                if watched.node == node:
                    del self._watched[upid]
                    watched.wake()

    async def _nap(self, node: str, seconds: float) -> bool:
        """Sleep ``seconds``; True when a new task cut the sleep short (see :meth:`watch`)."""
        kick = self._kicks.setdefault(node, asyncio.Event())
        kick.clear()
        if seconds <= self._interval:
            await self._sleep(seconds)  # short: a new task waits no longer than it would anyway
            return False
        self._waking_at[node] = self._clock() + seconds
        sleeper, kicked = asyncio.ensure_future(self._sleep(seconds)), asyncio.ensure_future(kick.wait())
        try:
            await asyncio.wait({sleeper, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            kicked.cancel()
            self._waking_at.pop(node, None)
        return kick.is_set()

    def _pause(self, node: str) -> float:
        """The wait before the node's next read: the soonest look any of its watched tasks needs."""
        now = self._clock()
        dues = [self._due(u, w, now) for u, w in self._watched.items() if w.node == node]
        return min(dues, default=self._interval)

    def _due(self, upid: str, watched: _Watched, now: float) -> float:
        """Seconds until this task's next look: the cadence by its age (cadence.py: a task just started
        is looked at every ``interval``, a long clone rarely), or its history (module doc)."""
        age = now - watched.since
        expected = self.expected(upid)
        if expected is not None and EARLY <= age < expected:
            target = AHEAD * expected if age < AHEAD * expected else expected
            # never past twice its age: a task much faster than its history is seen that late at most
            return max(self._interval, min(target - age, STRETCH * age))
        if expected is not None and age >= expected:
            age -= expected  # overran its history: the cadence again, from the expected end
        return next_look(age, floor=self._interval, fraction=TASK_FRACTION, cap=max(self._interval, TASK_CAP))

    def _learn(self, listed: list[TaskStatus]) -> None:
        for task in listed:
            if task.succeeded and task.starttime is not None and task.endtime is not None:
                kind = task_kind(task.upid)
                took = float(max(task.endtime - task.starttime, 0))
                known = self._durations.pop(kind, None)  # re-inserted: the dict keeps recent kinds last
                self._durations[kind] = took if known is None else min(known, took)
                if len(self._durations) > KNOWN_KINDS:
                    del self._durations[next(iter(self._durations))]

    def _settle(self, mine: dict[str, _Watched], listed: dict[str, TaskStatus], asked: float) -> None:
        now = self._clock()
        for upid in mine:
            task = listed.get(upid)
            current = self._watched.get(upid)  # watched again while the list was read: wake that one
            if current is None:
                continue
            if task is not None and task.running:
                current.listed = True
                continue
            del self._watched[upid]
            if task is not None:
                self._finished[upid] = (task, asked)
            current.wake()
        for upid in [u for u, (_, at) in self._finished.items() if now - at > KEEP_RESULTS]:
            del self._finished[upid]
