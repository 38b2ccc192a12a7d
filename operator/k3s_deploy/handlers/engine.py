"""What both controllers do around a pass, in one place: start from the body with our latest writes on
top, write status only when it changed, post Events, and turn a spec that does not validate into a
Stalled status.

Our last status write is laid over the body only until the watch delivers it (the resourceVersion the
write returned) or a fresh listing arrives (not one read before the write returned, which is older):
from then on the body is the truth, so a status someone wiped (a backup restore, a move,
``kubectl patch --subresource=status``) is seen and rebuilt, not hidden behind what this process
remembers."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from k3s_deploy.errors import K3sDeployError
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.wiring import Runtime

log = logging.getLogger(__name__)
_IGNORED_IN_DIFF = ("lastSyncTime",)
SYNC_TIME_REFRESH = 300.0  # seconds

# (namespace, name, status) -> the resourceVersion after the write, when the apiserver said
Patch = Callable[[str, str, dict[str, Any]], Awaitable[str | None]]


class EventLike(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


def current(runtime: Runtime, body: Mapping[str, Any]) -> dict[str, Any]:
    """The body with our latest writes on top (the watch may not have delivered them yet)."""
    raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in dict(body).items()}
    raw["metadata"] = dict(body.get("metadata") or {})
    uid = str(raw["metadata"].get("uid"))
    observe(runtime, raw["metadata"])
    if uid in runtime.last_status:
        raw["status"] = runtime.last_status[uid]
    if uid in runtime.last_annotations:
        raw["metadata"]["annotations"] = {
            **(raw["metadata"].get("annotations") or {}),
            **runtime.last_annotations[uid],
        }
    return raw


def observe(runtime: Runtime, metadata: Mapping[str, Any], *, listing: bool = False) -> None:
    """A body arrived (a watch event, or the body a pass starts from): once it carries our last status
    write, or is from a fresh listing (not older than that write), our copy goes."""
    uid = str(metadata.get("uid"))
    version = str(metadata.get("resourceVersion"))
    written, unchanged = runtime.written_versions.get(uid) or ("", False)
    if _older(version, written):
        return  # e.g. a listing read before our write returned: the watch delivers the write later
    # a write that changed nothing left the object at a version already seen: any other is newer
    if listing or (written and (version == written) != unchanged):
        runtime.last_status.pop(uid, None)
        runtime.written_versions.pop(uid, None)


def _older(version: str, than: str) -> bool:
    """Whether one resourceVersion of an object is older than another. They compare as integers
    (Kubernetes 1.35, KEP-5504; etcd revisions before); anything else is not known to be older."""
    if not (version.isascii() and version.isdigit() and than.isascii() and than.isdigit()):
        return False
    return int(version) < int(than)


def _strip(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in _IGNORED_IN_DIFF}


def same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal apart from lastSyncTime, which is refreshed only every few minutes (no write per resync)."""
    if a is None or _strip(a) != _strip(b):
        return False
    try:
        then = dt.datetime.fromisoformat(str(a.get("lastSyncTime")).replace("Z", "+00:00"))
        now = dt.datetime.fromisoformat(str(b.get("lastSyncTime")).replace("Z", "+00:00"))
    except ValueError:
        return True
    return (now - then).total_seconds() < SYNC_TIME_REFRESH


async def write(
    runtime: Runtime, raw: dict[str, Any], status: dict[str, Any], patch: Patch, *, force: bool = False
) -> None:
    """Write the status unless it is what is stored; ``force`` when the pass wrote status midway
    (the stored one is then that midway status, not the last outcome)."""
    meta = raw["metadata"]
    uid = str(meta["uid"])
    if not force and same(runtime.last_status.get(uid) or raw.get("status"), status):
        return
    version = await patch(meta["namespace"], meta["name"], status)
    runtime.last_status[uid] = status
    if version is not None:
        runtime.written_versions[uid] = (version, version == str(meta.get("resourceVersion")))


async def post(runtime: Runtime, raw: dict[str, Any], events: Iterable[EventLike]) -> None:
    for event in events:
        try:
            await runtime.kube.post_event(raw, type_=event.type, reason=event.reason, message=event.message)
        except K3sDeployError as exc:
            log.warning("could not post event %s: %s", event.reason, exc)


def invalid_spec(
    raw: dict[str, Any], exc: ValidationError, steps: Iterable[str], *, phase: str | None = None
) -> dict[str, Any]:
    """The status of an object whose spec does not validate: Stalled with the first error's place."""
    meta = raw["metadata"]
    conditions = Conditions(
        (raw.get("status") or {}).get("conditions", []), generation=meta.get("generation")
    )
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    conditions.stalled(True, "InvalidSpec", f"{where}: {first.get('msg')}")
    conditions.reconciling(False)
    conditions.summarize_ready(list(steps))
    out = {**(raw.get("status") or {}), "observedGeneration": meta.get("generation")}
    if phase is not None:
        out["phase"] = phase
    out["conditions"] = conditions.as_list()
    return out
