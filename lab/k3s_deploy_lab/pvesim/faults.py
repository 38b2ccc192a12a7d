"""Run-time fault injection and call accounting, driven through the admin endpoint.

Rules are plain JSON so tests and benchmarks can set them; randomness is seeded so a benchmark run
with the same seed fails the same calls.
"""

from __future__ import annotations

import fnmatch
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ErrorRule:
    """Fail calls whose key (`METHOD /path/template`) matches ``match`` (fnmatch) with ``rate``."""

    match: str
    rate: float = 1.0
    status: int = 500
    message: str = "simulated failure"
    remaining: int | None = None  # None: unlimited
    delay: float = 0.0  # seconds before the error answer (longer than a client's timeout = a timeout)
    apply: bool = False  # True: the call takes effect and only its answer is an error (a lost reply)


@dataclass
class TaskFailureRule:
    """Make tasks of ``type`` (and optionally one vmid/node) end with ``message``."""

    type: str
    message: str = "simulated task failure"
    vmid: int | None = None
    node: str | None = None
    remaining: int | None = None


@dataclass
class Faults:
    latency: float = 0.0  # seconds added to every API call
    latencies: dict[str, float] = field(default_factory=dict)  # fnmatch key -> extra seconds
    errors: list[ErrorRule] = field(default_factory=list)
    task_failures: list[TaskFailureRule] = field(default_factory=list)
    ignore_shutdown: list[int] = field(default_factory=list)  # guests that ignore ACPI shutdown
    seed: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def update(self, data: dict[str, Any]) -> None:
        """Merge an admin JSON document (keys as in :meth:`to_json`)."""
        if "seed" in data:
            self.seed = int(data["seed"])
            self.rng = random.Random(self.seed)
        if "latency" in data:
            self.latency = float(data["latency"])
        if "latencies" in data:
            self.latencies = {str(k): float(v) for k, v in data["latencies"].items()}
        if "errors" in data:
            self.errors = [ErrorRule(**e) for e in data["errors"]]
        if "taskFailures" in data:
            self.task_failures = [TaskFailureRule(**r) for r in data["taskFailures"]]
        if "ignoreShutdown" in data:
            self.ignore_shutdown = [int(v) for v in data["ignoreShutdown"]]

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "latency": self.latency,
            "latencies": self.latencies,
            "errors": [vars(e) for e in self.errors],
            "taskFailures": [vars(r) for r in self.task_failures],
            "ignoreShutdown": self.ignore_shutdown,
        }

    def delay_for(self, key: str) -> float:
        return self.latency + sum(v for pat, v in self.latencies.items() if fnmatch.fnmatchcase(key, pat))

    def error_for(self, key: str) -> ErrorRule | None:
        for rule in self.errors:
            if rule.remaining == 0 or not fnmatch.fnmatchcase(key, rule.match):
                continue
            if rule.rate >= 1.0 or self.rng.random() < rule.rate:
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule
        return None

    def task_failure(self, type_: str, vmid: str, node: str) -> str | None:
        for rule in self.task_failures:
            if rule.remaining == 0 or rule.type not in (type_, "*"):
                continue
            if rule.vmid is not None and str(rule.vmid) != vmid:
                continue
            if rule.node is not None and rule.node != node:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule.message
        return None


@dataclass
class Counts:
    """Calls per `METHOD /path/template` and per status code; benchmarks read and reset them."""

    calls: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)

    def record(self, key: str, status: int) -> None:
        self.calls[key] += 1
        self.statuses[f"{key} {status}"] += 1

    def to_json(self) -> dict[str, Any]:
        return {"total": sum(self.calls.values()), "calls": dict(self.calls), "statuses": dict(self.statuses)}

    def reset(self) -> None:
        self.calls.clear()
        self.statuses.clear()
