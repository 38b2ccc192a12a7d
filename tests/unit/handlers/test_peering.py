"""HA gate of the shared scheduler: the same verdict kopf peering reaches from the same object."""

from __future__ import annotations

import datetime as dt

import pytest

from k3s_deploy.errors import CredentialsError, KubeUnavailable
from k3s_deploy.handlers.peering import (
    PeeringGate,
    blocked_by_peers,
    ensure_peering,
    peering_locations,
    peering_plural,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def peer(priority: int, seconds_ago: float, lifetime: int = 30) -> dict[str, object]:
    seen = (NOW - dt.timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lastseen": seen, "lifetime": lifetime}


def test_live_peers_with_higher_or_equal_priority_block_us() -> None:
    status = {
        "me": peer(50, 0),
        "higher": peer(90, 5),
        "equal": peer(50, 5),
        "lower": peer(10, 5),
        "dead-higher": peer(99, 31),
    }
    assert blocked_by_peers(status, identity="me", priority=50, now=NOW) == ["equal", "higher"]
    assert blocked_by_peers(status, identity="me", priority=95, now=NOW) == []
    assert blocked_by_peers({"me": peer(1, 0)}, identity="me", priority=1, now=NOW) == []


def test_malformed_peers_are_ignored() -> None:
    status = {"odd": "text", "bad": {"priority": "x"}, "ok": peer(90, 0)}
    assert blocked_by_peers(status, identity="me", priority=50, now=NOW) == ["ok"]


def test_gate_follows_its_own_peering_objects_only() -> None:
    gate = PeeringGate(identity="me", priority=50, name="k3s-deploy")
    later = dt.datetime.now(dt.UTC)
    live_higher = {"priority": 90, "lastseen": later.isoformat(), "lifetime": 60}
    other = {"metadata": {"name": "someone-else", "namespace": "a"}, "status": {"x": live_higher}}
    assert gate.observe(other) is None and not gate.paused
    ours_a = {"metadata": {"name": "k3s-deploy", "namespace": "a"}, "status": {"x": live_higher}}
    ours_b = {"metadata": {"name": "k3s-deploy", "namespace": "b"}, "status": {}}
    assert gate.observe(ours_a) is True
    assert gate.observe(ours_b) is True  # any namespace's peering can hold us, as in kopf
    assert gate.observe({**ours_a, "status": {}}) is False
    assert gate.observe(ours_a) is True
    assert gate.observe(ours_a, deleted=True) is False


def test_plural_matches_the_scope() -> None:
    assert peering_plural(clusterwide=True) == "clusterkopfpeerings"
    assert peering_plural(clusterwide=False) == "kopfpeerings"


def test_peering_objects_live_where_kopf_looks_for_them() -> None:
    assert peering_locations([]) == [None]
    assert peering_locations(["a", "b"]) == ["a", "b"]
    # Patterns name no single namespace: nothing to create there.
    assert peering_locations(["team-*", "!kube-system", "c"]) == ["c"]


async def test_ensure_peering_creates_each_missing_object_and_survives_refusals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[tuple[str, str | None]] = []
    flaky = {"b": 2}

    async def create(name: str, where: str | None) -> bool:
        calls.append((name, where))
        if where == "b" and flaky["b"]:
            flaky["b"] -= 1
            raise KubeUnavailable("apiserver restarting")
        if where == "c":
            raise CredentialsError("cannot create KopfPeering", reason="Forbidden")
        return where != "a"  # "a" existed already

    await ensure_peering(create, name="k3s-deploy", namespaces=["a", "b", "c"], delay=0)
    assert calls == [("k3s-deploy", "a")] + [("k3s-deploy", "b")] * 3 + [("k3s-deploy", "c")]
    assert "cannot create KopfPeering" in caplog.text  # a refusal is logged as an error, not swallowed

    with pytest.raises(KubeUnavailable):
        flaky["b"] = 9
        await ensure_peering(create, name="k3s-deploy", namespaces=["b"], attempts=2, delay=0)
