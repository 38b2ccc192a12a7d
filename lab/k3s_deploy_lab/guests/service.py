"""The guests process: follows the simulator, runs the guests' SSH servers, serves the K3s stand-in.

It writes ``<state-dir>/ready.json`` (``sshPort``, ``httpUrl``, ``k3sInstallUrl``, ``k3sChannelUrl``, ``pid``) once it
listens and has applied the simulator's first guest list, so a supervisor knows when to go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from k3s_deploy_lab.guests.chaos import LabChaos
from k3s_deploy_lab.guests.fleet import GuestFleet
from k3s_deploy_lab.guests.follow import GuestsFeed
from k3s_deploy_lab.guests.k3s.control import K3sControl
from k3s_deploy_lab.guests.qga import GuestAgents

READY_FILE = "ready.json"


class GuestsService:
    """Everything the guests process runs, as one async context manager (also used in-process by tests)."""

    def __init__(
        self,
        *,
        pve_json: Path,
        state_dir: Path,
        ssh_port: int,
        http_port: int = 0,
        kubectl: str | None = None,
    ) -> None:
        self.pve_json = pve_json
        self.state_dir = state_dir.resolve()
        self.ssh_port = ssh_port
        self.http_port = http_port
        self.fleet: GuestFleet | None = None
        self.k3s: K3sControl | None = None
        self.chaos = LabChaos()
        self.http_url = ""

    def log(self, message: str) -> None:
        print(f"[guests] {message}", flush=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[GuestsService]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / READY_FILE).unlink(missing_ok=True)
        fleet = GuestFleet(self.state_dir, self.ssh_port)
        fleet.log = self.log
        self.fleet = fleet
        k3s = K3sControl(self.state_dir / "k3s", fleet, log=self.log, chaos=self.chaos)
        fleet.exec_hooks.append(self.chaos.on_exec)
        self.k3s = k3s
        fleet.extra_ro_binds.update(k3s.guest_binds())
        fleet.hooks.append(k3s.on_power)
        fleet.purge_hooks.append(k3s.on_purge)
        app = web.Application()
        k3s.add_routes(app)
        self.chaos.add_routes(app)
        agents = GuestAgents(fleet)
        agents.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.http_port, shutdown_timeout=1.0)  # see pvesim.server
        await site.start()
        port = int(runner.addresses[0][1])
        self.http_url = f"http://127.0.0.1:{port}"
        k3s.base_url = self.http_url
        feed = GuestsFeed.from_pve_json(self.pve_json, log=self.log)
        feed.agent_channel = {"url": self.http_url, "token": agents.secret}
        follow = asyncio.create_task(feed.run(fleet.apply))
        try:
            await asyncio.wait_for(feed.synced.wait(), timeout=60)
            await k3s.start()
            ready = {
                "sshPort": self.ssh_port,
                "httpUrl": self.http_url,
                "k3sInstallUrl": k3s.install_url,
                "k3sChannelUrl": f"{self.http_url}/v1-release/channels",
                "pid": os.getpid(),
            }
            (self.state_dir / READY_FILE).write_text(json.dumps(ready, indent=2))
            self.log(f"ready: ssh port {self.ssh_port}, installer {k3s.install_url}")
            yield self
        finally:
            (self.state_dir / READY_FILE).unlink(missing_ok=True)
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            await fleet.close()
            await k3s.close()
            await runner.cleanup()
