"""kstatus-compatible status conditions, shared by both controllers.

Conditions are kept as plain JSON dicts (what the status subresource stores) so a handler can put the
list straight into ``patch.status``. The rules tools such as Flux, Argo CD and ``kstatus`` rely on:

* ``lastTransitionTime`` moves only when ``status`` changes (a new reason or message keeps it);
* ``Reconciling`` and ``Stalled`` are present only while True (abnormal-true polarity), and never
  both: kstatus takes whichever comes first in the list, so both True would be read by accident;
* a ``Stalled`` left from an older generation is dropped as soon as a pass of the new generation
  does not raise it again (the error was about a spec that is gone);
* ``Ready`` summarises the step conditions; ``observedGeneration`` says which spec was acted on.

:meth:`Conditions.as_list` (what both controllers write) applies the last two rules, so no code path
can store a status that breaks them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

from k3s_deploy.errors import K3sDeployError
from k3s_deploy.secrets_mask import redact

Status = Literal["True", "False", "Unknown"]

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Condition(TypedDict, total=False):
    """One entry of ``status.conditions`` (the metav1.Condition shape)."""

    type: str
    status: str
    reason: str
    message: str
    observedGeneration: int
    lastTransitionTime: str


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it: UTC, second precision, trailing Z."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


_STATUSES: dict[object, Status] = {True: "True", False: "False", "True": "True", "False": "False"}


def _status(value: bool | str | None) -> Status:
    return _STATUSES.get(value, "Unknown")


class Conditions:
    """A mutable view of a conditions list with the kstatus rules built in.

    Build it from the current ``status.conditions``, call :meth:`set` / :meth:`stalled` /
    :meth:`reconciling`, then write :meth:`as_list` back. ``now`` is injectable for tests.
    """

    def __init__(
        self,
        existing: Iterable[Condition] | None = None,
        *,
        generation: int | None = None,
        now: str | None = None,
    ) -> None:
        self._items: list[Condition] = [Condition(**c) for c in (existing or []) if c.get("type")]
        self.generation = generation
        self._now = now
        # Reconciling/Stalled as this instance last touched them (set or removed), latest last.
        self._touched: list[str] = []

    def _time(self) -> str:
        return self._now or now_rfc3339()

    def get(self, type_: str) -> Condition | None:
        return next((c for c in self._items if c.get("type") == type_), None)

    def status_of(self, type_: str) -> Status | None:
        found = self.get(type_)
        return _status(found.get("status")) if found else None

    def is_true(self, type_: str) -> bool:
        return self.status_of(type_) == "True"

    def set(self, type_: str, status: bool | str | None, reason: str, message: str = "") -> Condition:
        """Add or replace a condition; keep ``lastTransitionTime`` unless ``status`` changed.

        The message is masked here (:mod:`k3s_deploy.secrets_mask`), so what is compared with the
        stored conditions is what gets stored."""
        new_status = _status(status)
        old = self.get(type_)
        condition = Condition(type=type_, status=new_status, reason=reason, message=redact(message))
        if self.generation is not None:
            condition["observedGeneration"] = self.generation
        if old is not None and _status(old.get("status")) == new_status and old.get("lastTransitionTime"):
            condition["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            condition["lastTransitionTime"] = self._time()
        if old is None:
            self._items.append(condition)
        else:
            self._items[self._items.index(old)] = condition
        self._touch(type_)
        return condition

    def remove(self, type_: str) -> None:
        self._items = [c for c in self._items if c.get("type") != type_]
        self._touch(type_)

    def _touch(self, type_: str) -> None:
        if type_ in (RECONCILING, STALLED):
            self._touched = [t for t in self._touched if t != type_] + [type_]

    def _settle(self) -> None:
        """Enforce the kstatus rules no caller may break: a Stalled of an older generation that this
        pass did not raise again goes; Reconciling and Stalled are never both True (the one this pass
        set last wins; Stalled when neither was touched)."""
        stalled = self.get(STALLED)
        if (
            stalled is not None
            and STALLED not in self._touched
            and self.generation is not None
            and stalled.get("observedGeneration") != self.generation
        ):
            self._items.remove(stalled)
        if self.is_true(RECONCILING) and self.is_true(STALLED):
            order = [t for t in self._touched if t in (RECONCILING, STALLED)]
            loser = RECONCILING if not order or order[-1] == STALLED else STALLED
            self._items = [c for c in self._items if c.get("type") != loser]

    def reconciling(self, active: bool, reason: str = "Progressing", message: str = "") -> None:
        """``Reconciling=True`` while work is in flight; absent otherwise."""
        if active:
            self.set(RECONCILING, True, reason, message)
        else:
            self.remove(RECONCILING)

    def stalled(self, active: bool, reason: str = "Failed", message: str = "") -> None:
        """``Stalled=True`` on a permanent error; absent otherwise."""
        if active:
            self.set(STALLED, True, reason, message)
        else:
            self.remove(STALLED)

    def from_error(self, error: K3sDeployError) -> None:
        """Reflect an operator error: permanent -> Stalled, transient -> Reconciling."""
        if error.transient:
            self.stalled(False)
            self.reconciling(True, error.reason, error.message)
        else:
            self.reconciling(False)
            self.stalled(True, error.reason, error.message)

    def summarize_ready(
        self, steps: Sequence[str], *, ready_message: str = "", ready_reason: str = "Ready"
    ) -> Condition:
        """Set ``Ready`` from the step conditions.

        Ready is True only when every step is True and nothing is stalled or in flight. Otherwise it
        carries the reason of what blocks it: Stalled first, then the first step not True, then
        Reconciling. ``ready_reason`` names a Ready that is not the running state (``Stopped``).
        """
        self._settle()
        stalled = self.get(STALLED)
        if stalled is not None and self.is_true(STALLED):
            return self.set(READY, False, stalled.get("reason", "Stalled"), stalled.get("message", ""))
        for step in steps:
            found = self.get(step)
            if found is None:
                return self.set(READY, "Unknown", "Progressing", f"{step} not yet known")
            if _status(found.get("status")) != "True":
                status: Status = "False" if _status(found.get("status")) == "False" else "Unknown"
                return self.set(READY, status, found.get("reason", step), found.get("message", ""))
        reconciling = self.get(RECONCILING)
        if reconciling is not None:
            return self.set(
                READY, "Unknown", reconciling.get("reason", "Progressing"), reconciling.get("message", "")
            )
        return self.set(READY, True, ready_reason, ready_message)

    def as_list(self) -> list[Condition]:
        """The conditions in a stable order: Ready, Reconciling, Stalled first, then the rest."""
        self._settle()
        head = [READY, RECONCILING, STALLED]
        first = [c for t in head for c in self._items if c.get("type") == t]
        rest = [c for c in self._items if c.get("type") not in head]
        return [Condition(**c) for c in first + rest]

    def changed_from(self, previous: Iterable[Condition] | None) -> bool:
        """True when writing :meth:`as_list` would change what is stored."""

        def key(items: Iterable[Condition]) -> list[tuple[str, ...]]:
            return sorted(
                tuple(
                    str(c.get(k, "")) for k in ("type", "status", "reason", "message", "observedGeneration")
                )
                for c in items
            )

        return key(previous or []) != key(self._items)


def acknowledge(status: Mapping[str, Any] | None, generation: int | None) -> dict[str, Any] | None:
    """The status to write the moment a pass starts on a generation not yet observed; None when it is.

    Without it an object has no status until its first pass ends, and kstatus reads an object
    without status as Current: a Flux wait would pass before the operator touched the object. The
    acknowledgement says the generation was seen and work is in flight (``Reconciling``), drops a
    Stalled that was about the previous spec, and turns a Ready=True into Unknown: a tool that reads
    ``observedGeneration`` and ``Ready`` alone (``kubectl wait``) must not see the old spec's
    readiness as the new one's. A Ready that is not True keeps its blocking reason.
    """
    current = dict(status or {})
    if generation is None or current.get("observedGeneration") == generation:
        return None
    conditions = Conditions(current.get("conditions"), generation=generation)
    conditions.stalled(False)
    conditions.reconciling(True, "Progressing", f"reconciling generation {generation}")
    if conditions.status_of(READY) in (None, "True"):
        conditions.set(READY, "Unknown", "Progressing", f"reconciling generation {generation}")
    return {**current, "observedGeneration": generation, "conditions": conditions.as_list()}
