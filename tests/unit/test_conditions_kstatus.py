"""The kstatus rules services.conditions enforces however a pass sets its conditions.

kstatus reads ``observedGeneration`` first, then takes whichever of Reconciling and Stalled comes
first in the list; an object without status is Current. These tests hold the operator to that.
"""

from __future__ import annotations

from k3s_deploy import errors
from k3s_deploy.services.conditions import Conditions, acknowledge

NOW = "2026-11-28T12:00:00Z"


def types(conds: Conditions) -> dict[str, str]:
    return {str(c["type"]): str(c["status"]) for c in conds.as_list()}


def test_reconciling_and_stalled_are_never_both_stored_the_later_wins() -> None:
    conds = Conditions(generation=1, now=NOW)
    conds.set("Reconciling", True, "TaskRunning", "clone in flight")
    conds.set("Stalled", True, "TemplateNotFound", "no template 9000")  # a careless caller: no remove
    assert types(conds) == {"Stalled": "True"}
    conds.set("Reconciling", True, "TaskRunning", "retrying")
    assert types(conds) == {"Reconciling": "True"}
    ready = conds.summarize_ready([])
    assert (ready["status"], ready["reason"]) == ("Unknown", "TaskRunning")


def test_both_carried_over_untouched_keeps_stalled() -> None:
    stored = [
        {"type": "Reconciling", "status": "True", "reason": "A", "observedGeneration": 1},
        {"type": "Stalled", "status": "True", "reason": "B", "observedGeneration": 1},
    ]
    assert types(Conditions(stored, generation=1)) == {"Stalled": "True"}


def test_stalled_of_an_older_generation_goes_unless_raised_again() -> None:
    old = Conditions(generation=1, now=NOW)
    old.from_error(errors.InvalidSpec("spec.vmid 100 is taken", reason="VmidInUse"))
    stored = old.as_list()
    # generation 2: the pass got further (waiting on a task) without raising the error again
    fixed = Conditions(stored, generation=2, now=NOW)
    fixed.set("VMProvisioned", "Unknown", "Cloning", "")
    assert "Stalled" not in types(fixed)
    assert fixed.summarize_ready(["VMProvisioned"])["reason"] == "Cloning"
    # generation 2 with the same error: refreshed for the new generation, still Stalled
    again = Conditions(stored, generation=2, now=NOW)
    again.from_error(errors.InvalidSpec("spec.vmid 100 is taken", reason="VmidInUse"))
    stalled = again.get("Stalled")
    assert stalled is not None and stalled["observedGeneration"] == 2
    assert next(c for c in again.as_list() if c["type"] == "Stalled")["observedGeneration"] == 2
    # same generation, untouched: kept (a pass that did not get as far does not clear it)
    assert types(Conditions(stored, generation=1)) == {"Stalled": "True"}


def test_acknowledge_a_new_object_and_a_new_generation() -> None:
    first = acknowledge(None, 1)
    assert first is not None and first["observedGeneration"] == 1
    by_type = {c["type"]: c for c in first["conditions"]}
    assert by_type["Reconciling"]["status"] == "True" and by_type["Reconciling"]["observedGeneration"] == 1
    assert by_type["Ready"]["status"] == "Unknown" and "Stalled" not in by_type
    assert acknowledge(first, 1) is None  # already observed: nothing to write

    ready = Conditions(generation=1, now=NOW)
    ready.summarize_ready([], ready_message="all good")
    stalled = Conditions(generation=1, now=NOW)
    stalled.from_error(errors.InvalidSpec("bad", reason="InvalidSpec"))
    stalled.summarize_ready([])
    for previous, ready_status in ((ready, "Unknown"), (stalled, "False")):
        ack = acknowledge({"observedGeneration": 1, "phase": "X", "conditions": previous.as_list()}, 2)
        assert ack is not None and ack["observedGeneration"] == 2 and ack["phase"] == "X"
        got = {c["type"]: c for c in ack["conditions"]}
        assert "Stalled" not in got and got["Reconciling"]["status"] == "True"
        # the old spec's readiness is not claimed for the new one; a blocking reason is kept
        assert got["Ready"]["status"] == ready_status


def test_ready_reason_names_a_desired_state_that_is_not_running() -> None:
    conds = Conditions(generation=3, now=NOW)
    ready = conds.summarize_ready([], ready_reason="Stopped", ready_message="all 3 VMs are stopped")
    assert (ready["status"], ready["reason"]) == ("True", "Stopped")
