"""A background task of the K3s stand-in that looks at every cluster of the lab every few seconds
(K3s's controllers watch; polling a loopback lab is simpler and close enough)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.cluster import LabCluster
    from k3s_deploy_lab.guests.k3s.control import K3sControl


class ClusterPoller:
    """Calls :meth:`sync` for each cluster every ``poll_seconds``; one cluster's trouble is logged and
    never stops the others."""

    poll_seconds = 2.0
    what = "k3s poller"

    def __init__(self, control: K3sControl) -> None:
        self.control = control
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def before_round(self) -> None:
        """Called before each round over the clusters."""

    async def sync(self, cluster: LabCluster) -> None:
        raise NotImplementedError

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.before_round()
            for cluster in list(self.control.clusters.values()):
                try:
                    await self.sync(cluster)
                except Exception as exc:
                    self.control.log(f"{self.what}, cluster {cluster.id}: {exc}")
