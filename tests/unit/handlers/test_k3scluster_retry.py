"""How soon a K3sCluster pass runs again after a failure: soon after the first transient one, rarer after
each more, and rarely for a stall."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from k3s_deploy import errors
from k3s_deploy.handlers.k3scluster import _next_delay
from k3s_deploy.services.k3scluster.state import Outcome


def _runtime(resync: float = 20.0) -> Any:
    return cast(Any, SimpleNamespace(settings=SimpleNamespace(resync_seconds=resync), failures={}))


def test_transient_failures_retry_at_1_2_4_s_then_back_off_to_the_cap_and_reset_on_success() -> None:
    runtime = _runtime()
    unreachable = Outcome(status={}, error=errors.SshUnavailable("10.0.0.10:22 refused the connection"))
    delays = [_next_delay(runtime, "u1", unreachable) for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert _next_delay(runtime, "u1", Outcome(status={}, requeue_after=3.0)) == 3.0
    assert _next_delay(runtime, "u1", unreachable) == 1.0  # the count starts again after a good pass


def test_a_stall_waits_a_resync_and_then_longer() -> None:
    runtime = _runtime(20.0)
    stalled = Outcome(status={}, error=errors.InvalidSpec("no template", reason="TemplateNotFound"))
    assert [_next_delay(runtime, "u2", stalled) for _ in range(3)] == [20.0, 40.0, 80.0]
