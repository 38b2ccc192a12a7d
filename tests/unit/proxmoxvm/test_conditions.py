"""The kstatus rules of services.conditions."""

from __future__ import annotations

from k3s_deploy.errors import ProxmoxPermissionDenied, ProxmoxUnavailable
from k3s_deploy.services.conditions import Conditions


def test_transition_time_moves_only_when_status_changes() -> None:
    conds = Conditions(generation=1, now="2026-01-01T00:00:00Z")
    conds.set("PoweredOn", False, "Stopped", "vm is stopped")
    first = conds.as_list()
    later = Conditions(first, generation=2, now="2026-01-02T00:00:00Z")
    later.set("PoweredOn", False, "Stopping", "another message")
    kept = later.get("PoweredOn")
    assert kept is not None
    assert kept["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert kept["reason"] == "Stopping"
    assert kept["observedGeneration"] == 2
    later.set("PoweredOn", True, "Running")
    moved = later.get("PoweredOn")
    assert moved is not None and moved["lastTransitionTime"] == "2026-01-02T00:00:00Z"


def test_reconciling_and_stalled_present_only_while_true() -> None:
    conds = Conditions(generation=3)
    conds.from_error(ProxmoxUnavailable("pve down"))
    assert conds.is_true("Reconciling") and conds.get("Stalled") is None
    conds.from_error(ProxmoxPermissionDenied("need VM.Allocate"))
    assert conds.get("Reconciling") is None
    stalled = conds.get("Stalled")
    assert stalled is not None and stalled["reason"] == "ProxmoxPermissionDenied"
    conds.stalled(False)
    assert conds.get("Stalled") is None


def test_ready_summary() -> None:
    conds = Conditions(generation=1)
    ready = conds.summarize_ready(["A", "B"])
    assert ready["status"] == "Unknown"
    conds.set("A", True, "Fine")
    conds.set("B", False, "AgentSilent", "agent not answering")
    ready = conds.summarize_ready(["A", "B"])
    assert (ready["status"], ready["reason"]) == ("False", "AgentSilent")
    conds.set("B", True, "Fine")
    conds.reconciling(True, "TaskRunning")
    assert conds.summarize_ready(["A", "B"])["status"] == "Unknown"
    conds.reconciling(False)
    assert conds.summarize_ready(["A", "B"])["status"] == "True"
    conds.stalled(True, "DiskShrinkRefused", "cannot shrink")
    ready = conds.summarize_ready(["A", "B"])
    assert (ready["status"], ready["reason"]) == ("False", "DiskShrinkRefused")
    assert [c["type"] for c in conds.as_list()][:2] == ["Ready", "Stalled"]


def test_changed_from_ignores_time_only() -> None:
    conds = Conditions(generation=1, now="2026-01-01T00:00:00Z")
    conds.set("A", True, "Fine")
    stored = conds.as_list()
    again = Conditions(stored, generation=1, now="2026-02-01T00:00:00Z")
    again.set("A", True, "Fine")
    assert not again.changed_from(stored)
    again.set("A", True, "Other")
    assert again.changed_from(stored)
