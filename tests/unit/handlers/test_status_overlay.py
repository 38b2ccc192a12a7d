"""Status is a cache (issue 17): our last write is laid over the body only until the watch delivers
it; a status wiped afterwards is seen by the next pass (and wakes the object), never hidden."""

from __future__ import annotations

from typing import Any

from k3s_deploy.handlers import engine
from k3s_deploy.handlers.proxmoxvm import _current

from .test_proxmoxvm_events import UID, body, runtime_with_scheduler, send

OURS = {"vmid": 100, "powerState": "Stopped", "observedGeneration": 1}


async def _write(runtime: Any, raw: dict[str, Any], status: dict[str, Any], version: str) -> None:
    async def patch(namespace: str, name: str, status: dict[str, Any]) -> str | None:
        return version

    await engine.write(runtime, raw, status, patch)


async def test_a_stale_body_gets_our_write_until_the_watch_delivers_it_then_a_wipe_is_seen() -> None:
    runtime, scheduler, _ = runtime_with_scheduler()
    await send(runtime, body(resourceVersion="10", status={}), type_=None)
    raw = _current(runtime, runtime.bodies[UID])
    await _write(runtime, raw, OURS, "12")
    # an event from before our write (someone's annotation at 11): the body's status is older
    await send(runtime, {**body(resourceVersion="11"), "status": {}})
    assert _current(runtime, runtime.bodies[UID])["status"] == OURS
    # the watch delivers our write: the body holds it, nothing is laid over it any more
    await send(runtime, {**body(resourceVersion="12"), "status": dict(OURS)})
    assert UID not in runtime.last_status and runtime.bodies[UID]["status"] == OURS
    entry = scheduler._entries[UID]
    entry.due += 60
    # someone wipes the status (restore, move, kubectl patch --subresource=status)
    await send(runtime, {**body(resourceVersion="13"), "status": None})
    assert not _current(runtime, runtime.bodies[UID]).get("status"), "the pass starts from the wipe"
    assert entry.due <= scheduler._now(), "the wipe wakes the object at once"


async def test_a_write_that_changed_nothing_yields_to_any_newer_event() -> None:
    runtime, _, _ = runtime_with_scheduler()
    await send(runtime, {**body(resourceVersion="20"), "status": dict(OURS)}, type_=None)
    raw = _current(runtime, runtime.bodies[UID])
    await _write(runtime, raw, {**OURS, "powerState": "Running"}, "20")  # the apiserver kept version 20
    assert _current(runtime, runtime.bodies[UID])["status"]["powerState"] == "Running"
    await send(runtime, {**body(resourceVersion="21"), "status": None})
    assert not _current(runtime, runtime.bodies[UID]).get("status")


async def test_a_fresh_listing_is_the_truth() -> None:
    runtime, _, _ = runtime_with_scheduler()
    await send(runtime, body(resourceVersion="30"), type_=None)
    await _write(runtime, _current(runtime, runtime.bodies[UID]), OURS, "31")
    await send(runtime, {**body(resourceVersion="40"), "status": {"vmid": 7}}, type_=None)
    assert _current(runtime, runtime.bodies[UID])["status"] == {"vmid": 7}


async def test_writes_whose_watch_events_come_before_their_replies_leave_the_next_pass_their_status() -> None:
    """The watch can hand us a write's event before the write's reply is handled (the reply comes
    back through a worker thread). Two such writes in a row (a clone pass writes the vmid, then the
    clone's task) must leave the next pass the last one. It once got a body stripped of its status:
    it found its own clone again by name while it ran and wrote a status without the clone's task."""
    runtime, _, _ = runtime_with_scheduler()
    ack = {"observedGeneration": 1}  # the pass's acknowledgement, delivered already
    await send(runtime, {**body(resourceVersion="10"), "status": ack}, type_=None)
    raw = _current(runtime, runtime.bodies[UID])
    vmid = {**ack, "vmid": 100}
    task = {**vmid, "taskRef": {"upid": "UPID:pve1:clone", "action": "clone", "node": "pve1"}}
    for status, version in ((vmid, "11"), (task, "12")):

        async def patch(namespace: str, name: str, sent: dict[str, Any], version: str = version) -> str:
            await send(runtime, {**body(resourceVersion=version), "status": dict(sent)})  # event first
            return version

        await engine.write(runtime, raw, status, patch)
    assert _current(runtime, runtime.bodies[UID])["status"] == task


async def test_a_listing_read_before_our_write_returned_does_not_hide_it() -> None:
    """kopf reads a re-list (after a watch error) and hands its bodies over one by one: one can be
    older than a write that returned meanwhile. Our write stays until the watch delivers it."""
    runtime, _, _ = runtime_with_scheduler()
    await send(runtime, body(resourceVersion="30"), type_=None)
    await _write(runtime, _current(runtime, runtime.bodies[UID]), OURS, "33")
    await send(runtime, {**body(resourceVersion="31"), "status": {"vmid": 100}}, type_=None)
    assert _current(runtime, runtime.bodies[UID])["status"] == OURS
    await send(runtime, {**body(resourceVersion="33"), "status": dict(OURS)})
    assert UID not in runtime.last_status and runtime.bodies[UID]["status"] == OURS
