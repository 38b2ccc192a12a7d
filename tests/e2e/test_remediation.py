"""Remediation end to end: an agent whose K3s stops is NotReady; past the timeout the operator reboots
its VM through Proxmox and the node comes back Ready."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import yaml

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _node_ready(lab: Lab, name: str) -> bool | None:
    proc = lab.kubectl("get", "node", name, "-o", "json", kubeconfig=lab.kubeconfig_of("heal"), check=False)
    if proc.returncode != 0:
        return None
    conditions = yaml.safe_load(proc.stdout)["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_notready_agent_is_rebooted_through_proxmox_and_comes_back(lab: Lab) -> None:
    remediation = {"nodeNotReadyTimeoutSeconds": 30, "maxUnhealthy": 1}
    lab.apply(lab.cluster("heal", servers=1, agents=1, extra_spec={"remediation": remediation}))
    lab.wait_ready("heal", timeout=300)
    nodes = {n["name"]: n for n in (lab.get("k3sc", "heal") or {})["status"]["nodes"]}
    agent = nodes["heal-agent-0"]

    asyncio.run(lab.ssh(agent["ip"], "sudo /usr/local/bin/k3s-killall.sh"))
    stopped = time.monotonic()
    _wait("the agent NotReady", lambda: _node_ready(lab, "heal-agent-0") is False, 60)
    reboot = _wait("the reboot Event", lambda: lab.events("heal", "RemediationReboot"), 120)
    took = time.monotonic() - stopped
    print(f"rebooted {took:.1f}s after K3s stopped (timeout 30 s)")
    assert took >= 29, "not before the timeout"
    assert "heal-agent-0" in reboot[0]["message"] and reboot[0]["type"] == "Warning"
    child = lab.get("pvm", "heal-agent-0")
    assert child["metadata"]["annotations"]["k3sdeploy.io/restart"].startswith("remediation@")
    status = (lab.get("k3sc", "heal") or {})["status"]
    assert [(r["node"], r["action"]) for r in status["remediations"]] == [("heal-agent-0", "Reboot")]

    # the VM really rebooted (Proxmox task) and K3s, enabled at boot, made the node Ready again
    _wait("the node Ready again", lambda: _node_ready(lab, "heal-agent-0"), 180)
    lab.wait_ready("heal", timeout=120)
    tasks = lab.sim.api().nodes(agent["pveNode"]).tasks.get(source="all", vmid=agent["vmid"])
    assert [t for t in tasks if t["type"] == "qmreboot"], tasks
    assert not lab.events("heal", "RemediationReplace"), "a reboot was enough"
    assert lab.get("pvm", "heal-agent-0")["metadata"]["uid"] == child["metadata"]["uid"]
