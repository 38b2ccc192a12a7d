"""The K3sCluster status is built and read through the api/ models: what a pass writes is exactly a
``K3sClusterStatus`` dump (no key the model does not know, nothing lost on a round trip), and a
planner's dict with a misspelt key is refused instead of being pruned by the apiserver."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from k3s_deploy.api.k3scluster_status import ChannelResolution, ClusterNode, K3sClusterStatus, UpgradeStatus
from k3s_deploy.services.k3scluster import channels, upgrade
from k3s_deploy.services.k3scluster.state import as_dict, to_model

from .day2_world import B, World, body, cond
from .test_day2_reconcile import ready_cluster, upgrade_to


def keys_outside_the_model(status: dict[str, Any]) -> set[str]:
    def aliases(model: type[Any]) -> set[str]:
        return {f.alias or name for name, f in model.model_fields.items()}

    out = set(status) - aliases(K3sClusterStatus)
    for node in status.get("nodes") or []:
        out |= {f"nodes[].{k}" for k in set(node) - aliases(ClusterNode)}
    out |= {f"upgrade.{k}" for k in set(status.get("upgrade") or {}) - aliases(UpgradeStatus)}
    out |= {
        f"channelResolution.{k}"
        for k in set(status.get("channelResolution") or {}) - aliases(ChannelResolution)
    }
    return out


def round_trip(status: dict[str, Any]) -> dict[str, Any]:
    model = K3sClusterStatus.model_validate(status)
    out = model.model_dump(by_alias=True, mode="json", exclude_unset=True)
    return out


async def test_every_status_a_pass_writes_is_a_model_dump_that_round_trips() -> None:
    w, b = await ready_cluster()
    written = list(w.objects.status_patches)
    assert written, "the passes wrote no midway status"
    upgrade_to(b, B)
    out = await w.pass_(b)  # a rollout in flight: status.upgrade, node states
    assert out.status.get("upgrade", {}).get("state") == "Progressing", out.status.get("upgrade")
    for status in [*written, *w.objects.status_patches, out.status]:
        assert keys_outside_the_model(status) == set()
        assert round_trip(status) == status


async def test_a_stopped_and_a_fresh_cluster_write_model_dumps_too() -> None:
    w = World()
    b = body(1, 1)
    first = await w.pass_(b)  # no VM yet: a few fields only
    assert keys_outside_the_model(first.status) == set() and round_trip(first.status) == first.status
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    assert round_trip(out.status) == out.status


def test_a_misspelt_key_from_a_planner_is_refused_not_pruned() -> None:
    progress = upgrade.Progress(to_version=B, state=upgrade.PROGRESSING, current=("s0",))
    good = progress.as_status()
    assert to_model(UpgradeStatus, good).current_nodes == ["s0"]
    misspelt = {**good, "curentNodes": ["s0"]}
    with pytest.raises(ValueError, match="curentNodes"):
        to_model(UpgradeStatus, misspelt)


def test_planner_records_round_trip_through_the_models() -> None:
    progress = upgrade.Progress(
        to_version=B,
        from_version="v1.31.4+k3s1",
        state=upgrade.FAILED,
        completed=("a0",),
        failed_node="a1",
        started_time="2026-11-28T12:00:00Z",
        finished_time="2026-11-28T12:30:00Z",
    )
    assert upgrade.Progress.from_status(as_dict(to_model(UpgradeStatus, progress.as_status()))) == progress
    resolution = channels.Resolution("stable", B, datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    model = to_model(ChannelResolution, resolution.as_status())
    assert as_dict(model) == resolution.as_status()
