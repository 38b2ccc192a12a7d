"""Free vmids for every clone of one credential: one ``nextid`` read serves a whole batch of siblings.

``GET /cluster/nextid`` answers the lowest free id, the same one to every sibling that asks before
the first clone lands; probing upwards with one call per candidate made N siblings cost N²/2 calls.
Here the answer is a floor kept for ``max_age`` seconds: ids are picked above it, locally, skipping
the ids the caller's fresh VM list shows and the ids this process has reserved for clones in flight.
An id taken behind our back (a container, another tool, a VM the credential may not see) is refused
by the clone itself; :meth:`VmidAllocator.refused` keeps that id reserved and drops the floor, so the
next pick asks Proxmox again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from k3s_deploy.ports.proxmox import ProxmoxClient

FLOOR_MAX_AGE = 30.0  # seconds a nextid answer is trusted as the floor of free ids


@dataclass
class VmidAllocator:
    client: ProxmoxClient
    max_age: float = FLOOR_MAX_AGE
    clock: Callable[[], float] = time.monotonic
    reserved: set[int] = field(default_factory=set)
    _floor: int | None = None
    _floor_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def claim(self, taken: Collection[int]) -> int:
        """The lowest id at or above the floor that is neither in ``taken`` nor reserved; reserved now."""
        floor = await self._current_floor()
        vmid = floor
        while vmid in self.reserved or vmid in taken:
            vmid += 1
        self.reserved.add(vmid)  # no await since the floor was read: siblings see it at once
        return vmid

    async def check(self, candidate: int) -> int:
        """``candidate`` (a recorded id or spec.vmid) if Proxmox says it is free; reserved now."""
        vmid = await self.client.next_vmid(candidate)
        self.reserved.add(vmid)
        return vmid

    def refused(self, vmid: int) -> None:
        """A clone was refused because ``vmid`` exists: keep it out of every pick, ask Proxmox again."""
        self.reserved.add(vmid)
        self._floor = None

    async def _current_floor(self) -> int:
        requested = self.clock()
        async with self._lock:  # siblings arriving together wait for one read
            if self._floor is not None and requested - self._floor_at < self.max_age:
                return self._floor
            floor = await self.client.next_vmid()
            self._floor, self._floor_at = floor, self.clock()
            # Below the lowest free id every id is taken in Proxmox: no need to remember them.
            self.reserved = {v for v in self.reserved if v >= floor}
            return floor
