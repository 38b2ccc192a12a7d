"""Lab chaos knobs of the guests process (lab/guests/chaos.py): SSH sessions cut mid-command,
replayable by seed, and a configurable K3s install duration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncssh
import pytest

from fixtures.guests import LabGuest, lab_net
from k3s_deploy_lab.guests.k3s.cluster import LabCluster
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()


async def _chaos(service: GuestsService, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        url = f"{service.http_url}/lab/v1/chaos"
        request = http.put(url, json=body) if body is not None else http.get(url)
        async with request as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data


async def _outcomes(guest: LabGuest, n: int) -> list[str]:
    results = []
    for _ in range(n):
        try:
            done = await guest.run("sleep 0.3; echo done")
            # a cut connection ends the session without an exit status
            results.append(done.stdout.strip() if done.exit_status == 0 else "dropped")
        except (asyncssh.Error, ConnectionError):
            results.append("dropped")
    return results


async def test_ssh_sessions_dropped_mid_command_replay_by_seed(
    guests: GuestsService, start_guest: Callable[..., Awaitable[LabGuest]]
) -> None:
    guest = await start_guest(301, f"{NET}31")
    drop = {"rate": 0.5, "seed": 11, "minDelay": 0.05, "maxDelay": 0.1, "match": "sleep"}
    await _chaos(guests, {"sshDrop": drop, "resetCounts": True})
    first = await _outcomes(guest, 12)
    assert "dropped" in first and "done" in first, first
    view = await _chaos(guests)
    assert view["drops"] == first.count("dropped") and view["execs"] == 12
    # commands that do not match are never cut
    assert (await guest.run("echo untouched")).stdout == "untouched\n"
    # the same seed drops the same commands
    await _chaos(guests, {"sshDrop": drop, "resetCounts": True})
    assert await _outcomes(guest, 12) == first
    await _chaos(guests, {"sshDrop": {"rate": 0}})
    assert await _outcomes(guest, 3) == ["done"] * 3


async def test_install_takes_the_configured_time(
    guests: GuestsService, start_guest: Callable[..., Awaitable[LabGuest]]
) -> None:
    guest = await start_guest(302, f"{NET}32")
    assert (await _chaos(guests, {"installSeconds": 1.5}))["installSeconds"] == 1.5
    started = time.monotonic()
    result = await guest.install_k3s(env="INSTALL_K3S_VERSION=v1.31.4+k3s1")
    assert result.exit_status == 0, result.stderr
    assert time.monotonic() - started >= 1.5
    bad = await asyncio.wait_for(_put_raw(guests, "[1]"), 10)
    assert bad == 400


async def test_a_first_servers_control_plane_starts_within_its_install_time(
    guests: GuestsService,
    start_guest: Callable[..., Awaitable[LabGuest]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """installSeconds stands for a real install (download and unit start, which includes K3s starting
    its own control plane): the stand-in's real start-up runs inside it, not after it."""
    began: list[float] = []
    original = LabCluster.start

    async def timed(self: LabCluster) -> None:
        began.append(time.monotonic())
        await original(self)

    monkeypatch.setattr(LabCluster, "start", timed)
    guest = await start_guest(303, f"{NET}33")
    await _chaos(guests, {"installSeconds": 2.0})
    started = time.monotonic()
    result = await guest.install_k3s(env="INSTALL_K3S_VERSION=v1.31.4+k3s1")
    took = time.monotonic() - started
    assert result.exit_status == 0, result.stderr
    assert len(began) == 1
    assert began[0] - started < 1.0, "the control plane started only after the install's time"
    assert took >= 2.0


async def _put_raw(service: GuestsService, text: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{service.http_url}/lab/v1/chaos", data=text) as resp,
    ):
        return resp.status
