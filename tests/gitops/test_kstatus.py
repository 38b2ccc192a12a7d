"""The statuses the operator writes, read by the real kstatus (sigs.k8s.io/cli-utils, what Flux and
kpt use) and by the Argo CD health script under Argo CD's own Lua runtime: both say the same thing,
and what docs/gitops.md says they say."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from .harness import argocd, kstatus, needs_go
from .statuses import Samples, clusters, vms

pytestmark = [needs_go, pytest.mark.timeout(900)]

# sample -> (kstatus, Argo CD). "no-status" is the hazard the operator's acknowledgement closes.
EXPECTED = {
    ("K3sCluster", "no-status"): ("Current", "Progressing"),
    ("K3sCluster", "fresh"): ("InProgress", "Progressing"),
    ("K3sCluster", "ready"): ("Current", "Healthy"),
    ("K3sCluster", "new-generation"): ("InProgress", "Progressing"),
    ("K3sCluster", "new-generation-acknowledged"): ("InProgress", "Progressing"),
    ("K3sCluster", "stopped"): ("Current", "Healthy"),
    ("K3sCluster", "stalled"): ("Failed", "Degraded"),
    ("K3sCluster", "stalled-new-generation"): ("InProgress", "Progressing"),
    ("K3sCluster", "stalled-acknowledged"): ("InProgress", "Progressing"),
    ("ProxmoxVM", "fresh"): ("InProgress", "Progressing"),
    ("ProxmoxVM", "ready"): ("Current", "Healthy"),
    ("ProxmoxVM", "stopped"): ("Current", "Healthy"),
    ("ProxmoxVM", "stalled"): ("Failed", "Degraded"),
}
SAME = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded"}


@pytest.fixture(scope="module")
def samples() -> dict[tuple[str, str], dict[str, Any]]:
    async def build() -> dict[str, Samples]:
        return {"K3sCluster": await clusters(), "ProxmoxVM": await vms()}

    built = asyncio.run(build())
    return {(kind, name): obj for kind, objs in built.items() for name, obj in objs.items()}


def test_every_sample_is_judged_as_documented(samples: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert set(samples) == set(EXPECTED)
    keys = list(samples)
    got_k = kstatus(*(samples[k] for k in keys))
    got_a = argocd(*(samples[k] for k in keys))
    for key, k, a in zip(keys, got_k, got_a, strict=True):
        assert not k.get("error") and not a.get("error"), (key, k, a)
        assert (k["status"], a["status"]) == EXPECTED[key], (key, k, a, samples[key].get("status"))
        if key[1] != "no-status":  # with a status, the two tools agree
            assert SAME[k["status"]] == a["status"], key


def test_stopped_as_asked_is_ready_with_reason_stopped(
    samples: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for kind in ("K3sCluster", "ProxmoxVM"):
        conditions = {c["type"]: c for c in samples[(kind, "stopped")]["status"]["conditions"]}
        assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("True", "Stopped"), kind
        assert "Reconciling" not in conditions and "Stalled" not in conditions


def test_the_operator_never_stores_reconciling_and_stalled_both_true(
    samples: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for key, obj in samples.items():
        true = {c["type"] for c in (obj.get("status") or {}).get("conditions", []) if c["status"] == "True"}
        assert not {"Reconciling", "Stalled"} <= true, key


def test_kstatus_takes_whichever_of_reconciling_and_stalled_comes_first(
    samples: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Why both True must never be stored: the verdict would depend on list order."""
    base = samples[("K3sCluster", "stalled")]
    stalled = next(c for c in base["status"]["conditions"] if c["type"] == "Stalled")
    reconciling = {**stalled, "type": "Reconciling", "reason": "Progressing"}
    first_r, first_s = copy.deepcopy(base), copy.deepcopy(base)
    first_r["status"]["conditions"] = [reconciling, stalled]
    first_s["status"]["conditions"] = [stalled, reconciling]
    assert [r["status"] for r in kstatus(first_r, first_s)] == ["InProgress", "Failed"]


def test_kstatus_checks_observed_generation_before_stalled_and_ignores_conditions_generation(
    samples: dict[tuple[str, str], dict[str, Any]],
) -> None:
    stale = samples[("K3sCluster", "stalled-new-generation")]
    assert kstatus(stale)[0]["status"] == "InProgress"
    ready = copy.deepcopy(samples[("K3sCluster", "ready")])
    for c in ready["status"]["conditions"]:
        c["observedGeneration"] = 0  # kstatus reads only status.observedGeneration
    assert kstatus(ready)[0]["status"] == "Current"


def test_an_object_being_deleted_is_terminating(samples: dict[tuple[str, str], dict[str, Any]]) -> None:
    gone = copy.deepcopy(samples[("K3sCluster", "ready")])
    gone["metadata"]["deletionTimestamp"] = "2026-11-28T12:00:00Z"
    assert kstatus(gone)[0]["status"] == "Terminating"
