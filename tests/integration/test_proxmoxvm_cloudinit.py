"""A cloud-init write that lands after the start: the operator process finds the stale cloud-init drive
at the first guest-agent contact and reboots the VM once; the guest ends with the spec's key.

Real apiserver, operator process and Proxmox VE simulator (as in test_proxmoxvm_sim.py).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import pytest

from integration.test_proxmoxvm_sim import KEY, Env, clone_spec, env  # noqa: F401  # env is a fixture

pytestmark = pytest.mark.integration

OLD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7nD5m7m1f0yb0l0ZKk7xq3Jv6e3yq2mQ3Yc9f0Xl0a old@host"


def _guest(environment: Env, vmid: int) -> dict[str, Any] | None:
    return next((g for g in environment.sim.guests()["guests"] if g["vmid"] == vmid), None)


def _started(env: Env, name: str, key: str) -> int:  # noqa: F811
    """Apply ``name`` with ``key``; return its vmid once the VM runs and its agent does not answer yet."""
    env.sim.set_timing(bootDelay=500.0)  # the guest agent answers 5 s after a start (scale 0.01)
    env.apply(
        name, clone_spec(cloudInit={"user": "k3s", "sshAuthorizedKeys": [key], "ipConfig": {"dhcp": True}})
    )
    vmid: int = env.wait_for(lambda: env.get(name).get("status", {}).get("vmid"), timeout=60, what="a vmid")

    def booting() -> bool:
        guest = _guest(env, vmid)
        return bool(guest and guest["status"] == "running" and not guest["agentReady"])

    env.wait_for(booting, timeout=60, what="VM started, guest agent not answering yet")
    assert _guest(env, vmid)["sshkeys"] == [key]  # type: ignore[index]
    return vmid


def test_key_written_after_the_start_reaches_the_guest(env: Env) -> None:  # noqa: F811
    vmid = _started(env, "late-key", OLD_KEY)
    # The key the cluster needs reaches the config only now, while the guest boots with the old drive.
    env.apply("late-key", clone_spec())
    env.wait_for(lambda: env.events("CloudInitStale"), timeout=60, what="a CloudInitStale event")
    env.wait_for(lambda: env.events("RebootDone"), timeout=60, what="the reboot done")
    env.wait_condition("late-key", "Ready", timeout=90)
    guest = _guest(env, vmid)
    assert guest is not None and guest["sshkeys"] == [KEY]
    (event,) = env.events("CloudInitStale")
    assert "sshkeys" in event["message"] and event["type"] == "Warning"
    assert len(env.events("RebootStarted")) == 1


def test_old_write_crossing_ours_is_undone_by_one_reboot(env: Env) -> None:  # noqa: F811
    vmid = _started(env, "late", KEY)
    # An older write of the keys, crossing ours, lands now: config and guest disagree.
    node = env.get("late")["status"]["node"]
    api = env.sim.api()
    api.nodes(node).qemu(vmid).config.put(sshkeys=urllib.parse.quote(OLD_KEY, safe=""))
    pending = api.nodes(node).qemu(vmid).cloudinit.get()
    assert any(e["key"] == "sshkeys" and "pending" in e for e in pending), pending

    env.wait_for(lambda: env.events("CloudInitStale"), timeout=60, what="a CloudInitStale event")
    env.wait_for(lambda: env.events("RebootDone"), timeout=60, what="the reboot done")
    obj = env.wait_condition("late", "Ready", timeout=90)
    assert obj["status"]["addresses"]
    guest = _guest(env, vmid)
    assert guest is not None and guest["sshkeys"] == [KEY]
    assert urllib.parse.unquote(env.config(vmid)["sshkeys"]) == KEY
    assert not [e for e in api.nodes(node).qemu(vmid).cloudinit.get() if "pending" in e or "delete" in e]
    (event,) = env.events("CloudInitStale")
    assert "sshkeys" in event["message"] and event["type"] == "Warning"

    # Steady state: several resyncs (3 s each) without another check or reboot.
    env.sim.reset_counts()
    time.sleep(10)
    counts = env.sim.counts()
    assert counts.get("GET /nodes/{node}/qemu/{vmid}/cloudinit", 0) == 0, counts
    assert counts.get("POST /nodes/{node}/qemu/{vmid}/status/reboot", 0) == 0, counts
    assert len(env.events("CloudInitStale")) == 1 and env.condition("late", "CloudInitStale") == {}
