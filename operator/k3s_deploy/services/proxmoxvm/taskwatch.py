"""In-flight Proxmox tasks, watched per node: one task-list read per node and interval, whatever N.

Polling each task's own status costs one call per task and second: 50 clones at once were 1069 calls.
``GET /nodes/{node}/tasks?source=all&since=S`` lists every task of the node that started at or after
S, the running ones included (status ``RUNNING``, no ``endtime``), so one read answers for all of
them. A poller per node runs while the node has watched tasks; when a task ends it keeps the result
and wakes the object that waits on it, whose pass then runs at once (no pass runs while it waits).

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
from k3s_deploy.services.proxmoxvm.cadence import TASK_CAP, TASK_FRACTION, next_look

log = logging.getLogger(__name__)

TASK_POLL = 1.0  # seconds between two reads of one node's task list, at first (cadence.py: then rarer)
WAKE_FALLBACK = 30.0  # a waiting object's own next look, should no wake come (see ``trust``)
KEEP_RESULTS = 600.0  # seconds a finished task's result waits to be taken


@dataclass
class _Watched:
    node: str
    starttime: int  # from the UPID: the node's own clock, so ``since`` needs no clock agreement
    wake: Callable[[], None]
    since: float  # monotonic
    listed: bool = False  # a read of the node's list has shown it running since it was watched


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
        failures = 0
        try:
            while True:
                await self._sleep(self._pause(node) * 2 ** min(failures, 3))
                mine = {u: w for u, w in self._watched.items() if w.node == node}
                if not mine:
                    return
                asked = self._clock()
                try:
                    listed = await self._client.node_tasks(
                        node, since=min(w.starttime for w in mine.values()), limit=50 + 2 * len(mine)
                    )
                except K3sDeployError as exc:
                    failures += 1
                    self._healthy[node] = False
                    log.info(
                        "task list of node %s unavailable (waiting passes read their tasks): %s", node, exc
                    )
                    continue
                self.reads += 1
                failures = 0
                self._healthy[node] = True
                self._settle(mine, {t.upid: t for t in listed}, asked)
        except Exception:  # a bug must not leave objects waiting for a wake that never comes
            log.exception("task poller of node %s failed; waiting objects read their tasks themselves", node)
            self._healthy[node] = False
            for upid, watched in list(self._watched.items()):
                if watched.node == node:
                    del self._watched[upid]
                    watched.wake()

    def _pause(self, node: str) -> float:
        """The wait before the node's next read: paced by its youngest watched task (cadence.py), so a
        task just started is looked at every ``interval`` while a long clone alone is read rarely."""
        ages = [self._clock() - w.since for w in self._watched.values() if w.node == node]
        youngest = min(ages, default=0.0)
        return next_look(
            youngest, floor=self._interval, fraction=TASK_FRACTION, cap=max(self._interval, TASK_CAP)
        )

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
