"""The per-object reconcile loop K3sCluster runs as a kopf daemon (clusters are few).

ProxmoxVMs, which come by the thousand, share :mod:`k3s_deploy.handlers.scheduler` instead. One loop
per object: reconcile, then sleep until the requested delay passes or an event handler wakes
the object (a spec change, a child changed). Failures back off exponentially up to the resync interval;
a bug is logged and retried, never allowed to end the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from k3s_deploy.errors import K3sDeployError
from k3s_deploy.handlers.scheduler import backoff
from k3s_deploy.wiring import Runtime

log = logging.getLogger(__name__)


async def reconcile_forever(
    runtime: Runtime,
    uid: str,
    name: str,
    stopped: Callable[[], bool],
    reconcile_once: Callable[[], Awaitable[float]],
    *,
    stop_signal: Callable[[], Awaitable[Any]],
    finished: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``reconcile_once`` (which returns the delay before the next pass) until stopped or finished.

    Between passes the loop sleeps on two signals only (woken, stopped): no periodic polling, so a
    thousand idle objects cost nothing between their resyncs.
    """
    failures = 0
    while not stopped() and not finished():
        try:
            delay = await reconcile_once()
            failures = 0
        except K3sDeployError as exc:  # the management cluster itself failed us (status write, ...)
            failures += 1
            delay = backoff(failures, runtime.settings.resync_seconds)
            log.warning("reconcile of %s failed, retrying in %.0fs: %s", name, delay, exc)
        except Exception:  # a bug must not end the loop: log it, back off, try again
            failures += 1
            delay = backoff(failures, runtime.settings.resync_seconds)
            log.exception("reconcile of %s crashed, retrying in %.0fs", name, delay)
        if not stopped():
            await _sleep_unless_woken(runtime.wakeup(uid), delay, stop_signal)


async def _sleep_unless_woken(
    wakeup: asyncio.Event, delay: float, stop_signal: Callable[[], Awaitable[Any]]
) -> None:
    """Sleep ``delay`` seconds, returning early when woken or stopped."""
    woken = asyncio.ensure_future(wakeup.wait())
    stopping = asyncio.ensure_future(stop_signal())
    try:
        await asyncio.wait({woken, stopping}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (woken, stopping):
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    wakeup.clear()
