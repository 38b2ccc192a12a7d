"""The per-object reconcile loop both kinds run as a kopf daemon.

One loop per object: reconcile, then sleep until the requested delay passes or an event handler wakes
the object (a spec change, a child changed). Failures back off exponentially up to the resync interval;
a bug is logged and retried, never allowed to end the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from k3s_deploy.errors import K3sDeployError
from k3s_deploy.runner import Runtime

log = logging.getLogger(__name__)


async def reconcile_forever(
    runtime: Runtime,
    uid: str,
    name: str,
    stopped: Callable[[], bool],
    reconcile_once: Callable[[], Awaitable[float]],
    *,
    finished: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``reconcile_once`` (which returns the delay before the next pass) until stopped or finished."""
    failures = 0
    while not stopped() and not finished():
        try:
            delay = await reconcile_once()
            failures = 0
        except K3sDeployError as exc:  # the management cluster itself failed us (status write, ...)
            failures += 1
            delay = min(5.0 * 2**failures, runtime.settings.resync_seconds)
            log.warning("reconcile of %s failed, retrying in %.0fs: %s", name, delay, exc)
        except Exception:  # a bug must not end the loop: log it, back off, try again
            failures += 1
            delay = min(5.0 * 2**failures, runtime.settings.resync_seconds)
            log.exception("reconcile of %s crashed, retrying in %.0fs", name, delay)
        await _sleep_unless_woken(runtime.wakeup(uid), delay, stopped)


async def _sleep_unless_woken(wakeup: asyncio.Event, delay: float, stopped: Callable[[], bool]) -> None:
    """Sleep ``delay`` seconds in short steps, returning early when woken or stopped."""
    waited = 0.0
    while not stopped() and not wakeup.is_set() and waited < delay:
        step = min(1.0, delay - waited)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout=step)
        waited += step
    wakeup.clear()
