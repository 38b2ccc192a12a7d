"""Crash safety: the operator killed (SIGKILL) at several points of clone -> configure -> start converges
with exactly one new VM, owned and configured as the spec says."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from .test_proxmoxvm_sim import Env, clone_spec, env  # noqa: F401  - env is a fixture

pytestmark = pytest.mark.integration


def _task(obj: dict[str, Any]) -> str | None:
    ref = (obj.get("status") or {}).get("taskRef") or {}
    return ref.get("action")


def _cond(obj: dict[str, Any], type_: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return str(c["status"])
    return None


KILL_POINTS: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    (
        "vmid recorded, clone not yet seen",
        lambda o: bool((o.get("status") or {}).get("vmid")) and not _task(o),
    ),
    ("clone task in flight", lambda o: _task(o) == "clone"),
    (
        "provisioned, configuring",
        lambda o: _cond(o, "VMProvisioned") == "True" and _cond(o, "PoweredOn") is None,
    ),
    ("start task in flight", lambda o: _task(o) == "start"),
]


def test_killed_mid_clone_configure_start_converges_without_duplicates(env: Env) -> None:  # noqa: F811
    sim = env.sim
    sim.set_faults(latency=0.25)  # widen every window between two Proxmox calls
    before = env.vmids()
    operator = env.operator  # type: ignore[attr-defined]
    env.apply("sturdy", clone_spec())
    kills: list[str] = []
    for label, seen in KILL_POINTS:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            obj = env.get("sturdy")
            if seen(obj):
                operator.kill()
                kills.append(label)
                time.sleep(0.5)
                operator.start()
                break
            if _cond(obj, "Ready") == "True":
                break
            time.sleep(0.05)
    assert len(kills) >= 2, f"the operator was killed only at {kills}"
    sim.reset_faults()
    obj = env.wait_condition("sturdy", "Ready", timeout=120)
    new = env.vmids() - before
    assert new == {obj["status"]["vmid"]}, f"expected one new VM, got {new} (killed at {kills})"
    config = env.config(obj["status"]["vmid"])
    uid = obj["metadata"]["uid"].replace("-", "")[:8]
    assert f"k3sdeploy-{uid}" in config["tags"] and config["cores"] == 2 and "size=8G" in config["scsi0"]
    assert operator.starts == len(kills) + 1
    print(f"killed at: {kills}")
