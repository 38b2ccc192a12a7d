"""How ProxmoxVM watch events feed the shared scheduler (add, wake, stop, forget) and what is kept."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from k3s_deploy.handlers.proxmoxvm import _validated, reconcile_once, slim, wake
from k3s_deploy.handlers.scheduler import Scheduler
from k3s_deploy.services.proxmoxvm.work import RESTART_ANNOTATION
from k3s_deploy.settings import OperatorSettings
from k3s_deploy.wiring import Runtime

UID = "0000-1111"


def body(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {
            "name": "vm1",
            "namespace": "ns",
            "uid": UID,
            "generation": 1,
            "resourceVersion": "10",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "me"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            **meta,
        },
        "spec": {"powerState": "Stopped"},
        "status": {"vmid": 100},
    }


def runtime_with_scheduler() -> tuple[Runtime, Scheduler, list[str]]:
    runtime = Runtime(settings=OperatorSettings(), kube=None, sessions=None, clusters=None)  # type: ignore[arg-type]
    calls: list[str] = []

    async def run_pass(key: str) -> float:
        calls.append(key)
        return 60.0

    scheduler = Scheduler(run_pass, resync=60.0)  # not started: the test looks at its bookkeeping
    runtime.scheduler = scheduler
    return runtime, scheduler, calls


async def send(runtime: Runtime, raw: dict[str, Any], type_: str | None = "MODIFIED") -> None:
    await wake(event={"type": type_, "object": raw}, body=kopf.Body(raw), memo=kopf.Memo(runtime=runtime))


def test_slim_drops_managed_fields_and_the_applied_manifest_only() -> None:
    raw = body()
    kept = slim(raw)
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"keep": "me"}
    assert kept["spec"] == raw["spec"] and kept["status"] == raw["status"]
    assert raw["metadata"]["managedFields"] and len(raw["metadata"]["annotations"]) == 2  # untouched


async def test_listing_adds_the_object_and_status_writes_do_not_wake_it() -> None:
    runtime, scheduler, _ = runtime_with_scheduler()
    await send(runtime, body(), type_=None)  # kopf's initial listing (also after a restart)
    assert UID in scheduler and "managedFields" not in runtime.bodies[UID]["metadata"]
    due = scheduler._entries[UID].due
    scheduler._entries[UID].due = due + 60  # as if the first pass had run and asked for 60 s
    changed = copy.deepcopy(body(resourceVersion="11"))
    changed["status"] = {"vmid": 100, "powerState": "Stopped"}
    await send(runtime, changed)
    assert scheduler._entries[UID].due == due + 60  # our own status write: no wake-up
    assert runtime.bodies[UID]["status"]["powerState"] == "Stopped"  # but the latest body is kept


async def test_under_our_write_the_kept_body_keeps_its_own_status() -> None:
    from k3s_deploy.handlers.proxmoxvm import _current

    runtime, _, _ = runtime_with_scheduler()
    written = {"vmid": 100, "powerState": "Stopped"}
    runtime.last_status[UID] = written
    await send(runtime, {**body(resourceVersion="11"), "status": {"vmid": 100}})
    assert _current(runtime, runtime.bodies[UID])["status"] is written  # a pass sees our write
    # what a pass falls back to once our write is matched to a body (see test_status_overlay)
    assert runtime.bodies[UID]["status"] == {"vmid": 100}


async def test_spec_or_restart_annotation_change_wakes_the_object() -> None:
    runtime, scheduler, _ = runtime_with_scheduler()
    await send(runtime, body(), type_=None)
    entry = scheduler._entries[UID]
    entry.due += 60
    await send(runtime, body(generation=2))
    assert entry.due <= scheduler._now()
    entry.due += 60
    await send(runtime, body(generation=2, annotations={RESTART_ANNOTATION: "now"}))
    assert entry.due <= scheduler._now()


async def test_deletion_stops_scheduling_and_gone_objects_are_forgotten() -> None:
    runtime, scheduler, _ = runtime_with_scheduler()
    await send(runtime, body(), type_=None)
    runtime.last_status[UID] = {"vmid": 100}
    await send(runtime, body(deletionTimestamp="2026-11-28T12:00:00Z"))
    assert UID not in scheduler and UID in runtime.bodies  # the finalizer handler still needs it
    await send(runtime, body(deletionTimestamp="2026-11-28T12:00:00Z"), type_="DELETED")
    assert UID not in runtime.bodies and UID not in runtime.last_status


async def test_a_pass_that_waited_for_the_finalizer_does_nothing() -> None:
    runtime, _, _ = runtime_with_scheduler()  # kube=None: any API call would fail the test
    runtime.bodies[UID] = slim(body(deletionTimestamp="2026-11-28T12:00:00Z"))
    assert await reconcile_once(runtime, UID) == runtime.settings.resync_seconds
    del runtime.bodies[UID]  # forgotten once the finalizer handler is done
    assert await reconcile_once(runtime, UID) == runtime.settings.resync_seconds


def test_the_model_is_validated_again_only_when_its_input_changes() -> None:
    runtime, _, _ = runtime_with_scheduler()
    raw = {**body(), "spec": {"credentialsRef": {"name": "pve"}, "source": {"existing": {"vmid": 100}}}}
    first = _validated(runtime, UID, raw)
    assert _validated(runtime, UID, copy.deepcopy(raw)) is first  # steady state: reused
    newer = copy.deepcopy(raw)
    newer["metadata"]["resourceVersion"] = "11"
    newer["spec"]["powerState"] = "Running"
    second = _validated(runtime, UID, newer)
    assert second is not first and second.spec.power_state == "Running"
    runtime.last_status[UID] = {"vmid": 100}  # a status we wrote (same resourceVersion)
    third = _validated(runtime, UID, newer)
    assert third is not second
    runtime.last_annotations[UID] = {RESTART_ANNOTATION: "done"}
    assert _validated(runtime, UID, newer) is not third
    runtime.forget(UID)
    assert UID not in runtime.models
