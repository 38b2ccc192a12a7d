"""A shared, per-credential view of every VM: one ``/cluster/resources`` read serves all objects.

This is what keeps a steady-state resync at O(1) Proxmox calls per interval and credential instead of
O(N): each ProxmoxVM's resync asks the cache, and only the first asker after ``max_age`` pays a call.
Concurrent askers wait for the same read.

An object that changed its VM (or saw its task end) needs a list read *after* that moment, nobody
else does: it asks with ``after`` and any read sent since serves it. Marking the whole cache stale at
every task end made each end cost a read of everyone's list (177 reads for 200 VMs); now the objects
whose task ends one task-list read showed share the first list read sent after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from k3s_deploy.ports.proxmox import (
    NodeSummary,
    ProxmoxClient,
    ProxmoxConnector,
    ProxmoxCredentials,
    VmSummary,
)
from k3s_deploy.services.proxmoxvm.placement import Reservations
from k3s_deploy.services.proxmoxvm.taskwatch import TaskWatch
from k3s_deploy.services.proxmoxvm.vmids import VmidAllocator

NODES_MAX_AGE = 10.0  # seconds a node list serves placement


@dataclass
class Snapshot:
    vms: list[VmSummary]
    taken_at: float  # monotonic, when the answer came
    wall_time: float  # epoch seconds, to turn uptime into a boot time
    asked_at: float = 0.0  # monotonic, when the request was sent: it shows every change made before
    nodes: list[NodeSummary] = field(default_factory=list)  # empty: the credential has no Sys.Audit
    _index: dict[int, VmSummary] | None = field(default=None, init=False, repr=False, compare=False)

    def _by_id(self) -> dict[int, VmSummary]:
        if self._index is None:
            self._index = {vm.vmid: vm for vm in reversed(self.vms)}  # the first wins, as before
        return self._index

    def vmids(self) -> Collection[int]:
        """Every vmid the list holds, templates included (ids a new clone must not take)."""
        return self._by_id().keys()

    def by_vmid(self, vmid: int) -> VmSummary | None:
        """O(1): every object looks itself up in the same snapshot each resync (a scan is O(N^2))."""
        return self._by_id().get(vmid)


@dataclass
class Inventory:
    """The cached VM list of one credential."""

    client: ProxmoxClient
    max_age: float
    clock: Callable[[], float] = time.monotonic
    _snapshot: Snapshot | None = None
    _stale: bool = True
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reads: int = 0
    _nodes: tuple[float, list[NodeSummary]] | None = None
    _nodes_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def nodes(self) -> list[NodeSummary]:
        """The node list for placement, shared for ``NODES_MAX_AGE`` (siblings place together): the
        nodes the last VM list read carried, else a read of ``GET /nodes``."""
        snap = self._snapshot
        if snap is not None and snap.nodes and self.clock() - snap.taken_at < NODES_MAX_AGE:
            return snap.nodes
        async with self._nodes_lock:
            if self._nodes is None or self.clock() - self._nodes[0] >= NODES_MAX_AGE:
                self._nodes = (self.clock(), await self.client.nodes())
            return self._nodes[1]

    def invalidate(self) -> None:
        """The next :meth:`get` of anyone reads Proxmox again (a change everyone must see)."""
        self._stale = True

    async def get(
        self, *, fresh: bool = False, after: float | None = None, max_age: float | None = None
    ) -> Snapshot:
        """The shared list: at most ``max_age`` old (the inventory's own by default); read since this
        call began when ``fresh``; sent at or after ``after`` (this clock) when given, i.e. showing a
        change the caller made or saw then."""
        requested = self.clock()
        age = self.max_age if max_age is None else min(max_age, self.max_age)
        async with self._lock:
            snap = self._snapshot
            if snap is not None and not self._stale and (after is None or snap.asked_at >= after):
                if not fresh and requested - snap.taken_at < age:
                    return snap
                if fresh and snap.taken_at >= requested:
                    return snap  # someone read it while we waited: that is fresh enough
            asked = self.clock()
            vms, nodes = await self.client.cluster_resources()
            self.reads += 1
            self._snapshot = Snapshot(vms, self.clock(), time.time(), asked_at=asked, nodes=nodes)
            self._stale = False
            return self._snapshot


@dataclass
class Session:
    """A client and its inventory, for one credential."""

    client: ProxmoxClient
    inventory: Inventory
    vmids: VmidAllocator
    tasks: TaskWatch
    placements: Reservations = field(default_factory=Reservations)  # nodes chosen, not yet in status


class Sessions:
    """Sessions per credential, shared by every ProxmoxVM the operator handles."""

    def __init__(
        self,
        connector: ProxmoxConnector,
        *,
        max_age: float,
        task_watch: Callable[[ProxmoxClient], TaskWatch] = TaskWatch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connector = connector
        self._max_age = max_age
        self._clock = clock  # the task watch's too: a task end seen at t asks for a list sent after t
        self._task_watch = task_watch
        self._sessions: dict[str, Session] = {}

    def get(self, credentials: ProxmoxCredentials) -> Session:
        session = self._sessions.get(credentials.key)
        if session is None:
            client = self._connector.connect(credentials)
            session = Session(
                client,
                Inventory(client, self._max_age, clock=self._clock),
                VmidAllocator(client),
                self._task_watch(client),
            )
            self._sessions[credentials.key] = session
        return session

    def all(self) -> list[Session]:
        return list(self._sessions.values())
