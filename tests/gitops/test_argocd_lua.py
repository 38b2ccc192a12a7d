"""manifests/argocd/health.lua under Argo CD's Lua runtime (gopher-lua, Lua 5.1, base + package +
table + a two-function os, one-second deadline), against statuses built by the operator's own
condition code; and proof that the harness refuses what Argo CD would refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_deploy import errors
from k3s_deploy.services.conditions import Conditions

from .harness import HEALTH_LUA, argocd, health, needs_go

pytestmark = [needs_go, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-11-28T12:00:00Z"


def resource(kind: str, generation: int, status: dict[str, Any] | None, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "edge", "namespace": "team-a", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def ready_cluster(generation: int) -> dict[str, Any]:
    c = Conditions(generation=generation, now=NOW)
    for step in ("ServersReady", "AgentsReady"):
        c.set(step, True, "AllReady", "3/3 ready")
    c.summarize_ready(["ServersReady", "AgentsReady"], ready_message="K3s v1.31.4+k3s1 on 3 servers")
    return {"observedGeneration": generation, "phase": "Ready", "conditions": c.as_list()}


@pytest.mark.parametrize("kind", ["K3sCluster", "ProxmoxVM"])
def test_healthy_when_ready_for_the_current_generation(kind: str) -> None:
    assert health(resource(kind, 2, ready_cluster(2))) == ("Healthy", "Ready: K3s v1.31.4+k3s1 on 3 servers")


def test_progressing_before_first_status_and_while_generation_unobserved() -> None:
    assert health(resource("K3sCluster", 1, None))[0] == "Progressing"
    state, message = health(resource("K3sCluster", 3, ready_cluster(2)))
    assert state == "Progressing" and "generation 3" in message


def test_progressing_while_reconciling_with_its_message() -> None:
    c = Conditions(generation=4, now=NOW)
    c.set("VMProvisioned", True, "Cloned", "VM 101 cloned from template 9000")
    c.from_error(errors.GuestNotReady("waiting for the guest agent of VM 101 to report an address"))
    c.set("PoweredOn", True, "Running", "")
    c.summarize_ready(["VMProvisioned", "PoweredOn", "AgentReady"])
    obj = resource("ProxmoxVM", 4, {"observedGeneration": 4, "conditions": c.as_list()})
    assert health(obj) == (
        "Progressing",
        "GuestNotReady: waiting for the guest agent of VM 101 to report an address",
    )


def test_degraded_when_stalled_but_only_for_the_observed_generation() -> None:
    c = Conditions(generation=1, now=NOW)
    c.from_error(
        errors.ProxmoxPermissionDenied("token k3sd@pve!op lacks VM.Clone on /vms/9000: grant it PVEVMAdmin")
    )
    c.summarize_ready(["VMProvisioned"])
    obj = resource("ProxmoxVM", 1, {"observedGeneration": 1, "conditions": c.as_list()})
    assert health(obj) == (
        "Degraded",
        "ProxmoxPermissionDenied: token k3sd@pve!op lacks VM.Clone on /vms/9000: grant it PVEVMAdmin",
    )
    # a new spec the operator has not observed yet: the error was about the old one (kstatus order)
    obj["metadata"]["generation"] = 2
    assert health(obj)[0] == "Progressing"


def test_not_ready_and_not_reconciling_is_progressing_with_the_blocking_reason() -> None:
    c = Conditions(generation=1, now=NOW)
    c.set("ServersReady", False, "NodeNotReady", "server edge-s-1 NotReady")
    c.summarize_ready(["ServersReady"])
    obj = resource("K3sCluster", 1, {"observedGeneration": 1, "conditions": c.as_list()})
    assert health(obj) == ("Progressing", "NodeNotReady: server edge-s-1 NotReady")


def test_suspended_when_paused() -> None:
    assert health(resource("K3sCluster", 1, ready_cluster(1), paused=True))[0] == "Suspended"


def test_argocd_cm_carries_the_same_script_for_both_kinds() -> None:
    cm = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    keys = {k for k in cm["data"] if k.startswith("resource.customizations.health.")}
    assert keys == {
        "resource.customizations.health.k3sdeploy.io_K3sCluster",
        "resource.customizations.health.k3sdeploy.io_ProxmoxVM",
    }
    for key in keys:
        assert cm["data"][key] == HEALTH_LUA.read_text(), f"{key} drifted from health.lua"
        assert health(resource("K3sCluster", 1, ready_cluster(1)), cm["data"][key])[0] == "Healthy"


RETURN_OK = '\nlocal hs = {}\nhs.status = "Healthy"\nhs.message = tostring(x)\nreturn hs\n'


@pytest.mark.parametrize(
    ("snippet", "why"),
    [
        ("local x = 7 // 2", "syntax error"),  # integer division is Lua 5.3
        ('local x = ("ready"):upper()', "non-table object"),  # no string library in Argo CD
        ('local x = string.format("%d", 1)', "string"),
        ('local x = os.getenv("HOME")', "(nil) with key 'getenv'"),  # os is not a global there
        ('local x = require("os").getenv("HOME")', "non-function"),  # only time and date
        ('local x = io.open("/etc/passwd")', "(nil) with key 'open'"),  # no io library
        ("local x = 1 & 1", "Invalid token"),  # bitwise operators are Lua 5.3
        ("local x = 0; while true do x = x + 1 end", "context"),  # the one-second deadline
    ],
)
def test_the_harness_refuses_what_argo_cd_refuses(snippet: str, why: str) -> None:
    got = argocd(resource("K3sCluster", 1, ready_cluster(1)), script=snippet + RETURN_OK)[0]
    assert got.get("error"), f"{snippet!r} ran under the Argo CD sandbox: {got}"
    assert why in got["error"], got["error"]


def test_the_harness_allows_what_argo_cd_allows() -> None:
    script = (
        'local os = require("os")\nlocal t = {}\ntable.insert(t, "a")\n'
        "local x = tostring(#t) .. tostring(os.time() > 0) .. tostring(math)\n" + RETURN_OK
    )
    got = argocd(resource("K3sCluster", 1, None), script=script)[0]
    assert got == {"status": "Healthy", "message": "1truenil"}, got


def test_an_invalid_health_status_is_unknown() -> None:
    got = argocd(resource("K3sCluster", 1, None), script='return {status = "Fine"}')[0]
    assert got["status"] == "Unknown" and got.get("error")
