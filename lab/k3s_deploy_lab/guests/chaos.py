"""Lab-only knobs for benchmarks and fault campaigns: how long a K3s install takes, and dropped SSH.

Real installs take tens of seconds (download, unit start, node registration) and real networks drop
SSH sessions; the stand-in does neither by itself. ``GET/PUT <httpUrl>/lab/v1/chaos`` (JSON) reads or
merges the settings: ``installSeconds`` (added to every K3s install, outside the install lock so joins
still overlap), ``sshDrop`` = ``{"rate": 0.2, "seed": 7, "minDelay": 0, "maxDelay": 1, "match": "install"}``
(each exec request whose command contains ``match`` is, with probability ``rate``, cut off by aborting
its SSH connection after a delay drawn from ``[minDelay, maxDelay]``; draws come from
``random.Random(seed)`` so a campaign replays). The answer also counts ``execs`` and ``drops``.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import asyncssh
import asyncssh.connection
from aiohttp import web


class LabChaos:
    """Settings and counters; ``on_exec`` is the guests' SSH exec hook."""

    def __init__(self, install_seconds: float = 0.0) -> None:
        self.install_seconds = install_seconds
        self.drop_rate = 0.0
        self.drop_delay = (0.0, 1.0)
        self.drop_match = ""
        self.seed: int | None = None
        self.rng = random.Random()
        self.execs = 0
        self.drops = 0

    def on_exec(self, conn: asyncssh.connection.SSHConnection | None, command: str | None) -> None:
        """Called when a guest starts an exec request: maybe schedule the connection's abort."""
        self.execs += 1
        if conn is None or self.drop_rate <= 0 or self.drop_match not in (command or ""):
            return
        if self.rng.random() >= self.drop_rate:
            return
        self.drops += 1
        asyncio.get_running_loop().call_later(self.rng.uniform(*self.drop_delay), conn.abort)

    def view(self) -> dict[str, Any]:
        return {
            "installSeconds": self.install_seconds,
            "sshDrop": {
                "rate": self.drop_rate,
                "seed": self.seed,
                "minDelay": self.drop_delay[0],
                "maxDelay": self.drop_delay[1],
                "match": self.drop_match,
            },
            "execs": self.execs,
            "drops": self.drops,
        }

    def update(self, body: dict[str, Any]) -> None:
        if "installSeconds" in body:
            self.install_seconds = max(0.0, float(body["installSeconds"]))
        drop = body.get("sshDrop")
        if isinstance(drop, dict):
            self.drop_rate = min(1.0, max(0.0, float(drop.get("rate", self.drop_rate))))
            low = float(drop.get("minDelay", self.drop_delay[0]))
            high = float(drop.get("maxDelay", self.drop_delay[1]))
            self.drop_delay = (max(0.0, low), max(low, high))
            self.drop_match = str(drop.get("match", self.drop_match) or "")
            if "seed" in drop:
                self.seed = None if drop["seed"] is None else int(drop["seed"])
                self.rng = random.Random(self.seed)
        if body.get("resetCounts"):
            self.execs = self.drops = 0

    def add_routes(self, app: web.Application) -> None:
        async def get(request: web.Request) -> web.Response:
            return web.json_response(self.view())

        async def put(request: web.Request) -> web.Response:
            try:
                body = json.loads(await request.text() or "{}")
                if not isinstance(body, dict):
                    raise ValueError("a JSON object is expected")
                self.update(body)
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(self.view())

        app.router.add_get("/lab/v1/chaos", get)
        app.router.add_put("/lab/v1/chaos", put)
