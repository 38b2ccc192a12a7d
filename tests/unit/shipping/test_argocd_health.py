"""The Argo CD health check (manifests/argocd/health.lua) run by a real Lua interpreter.

Status samples are written by the operator's own condition helpers (services/conditions.py) from
the operator's own errors, so the Lua reads exactly the shapes the controllers store.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_deploy import errors
from k3s_deploy.services.conditions import Conditions

ROOT = Path(__file__).resolve().parents[3]
HEALTH = ROOT / "manifests" / "argocd" / "health.lua"
LUA = shutil.which("lua5.4") or shutil.which("lua")
NOW = "2026-11-28T12:00:00Z"

pytestmark = pytest.mark.skipif(LUA is None, reason="lua5.4 missing: ./dev setup installs it (DEBS)")


def to_lua(value: Any) -> str:
    """A Python value as a Lua literal (JSON null -> nil, as Argo CD's conversion does)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return (
            '"' + "".join(c if c.isalnum() or c in " .,:;/-_()=<>'!?" else f"\\{ord(c)}" for c in value) + '"'
        )
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def health(obj: dict[str, Any], script: str | None = None) -> tuple[str, str]:
    """Run the script the way Argo CD does: ``obj`` global, the chunk returns ``hs``."""
    assert LUA is not None
    code = (
        f"obj = {to_lua(obj)}\n"
        "local chunk = assert(load(io.read('a'), 'health.lua', 't'))\n"
        "local hs = chunk()\n"
        "io.write(hs.status, '\\n', hs.message or '')\n"
    )
    out = subprocess.run(
        [LUA, "-e", code],
        input=script if script is not None else HEALTH.read_text(),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    status, _, message = out.partition("\n")
    return status, message


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
    c.reconciling(False)
    c.stalled(False)
    c.summarize_ready(["ServersReady", "AgentsReady"], ready_message="K3s v1.31.4+k3s1 on 3 servers")
    return {"observedGeneration": generation, "phase": "Ready", "conditions": c.as_list()}


@pytest.mark.parametrize("kind", ["K3sCluster", "ProxmoxVM"])
def test_healthy_when_ready_for_the_current_generation(kind: str) -> None:
    assert health(resource(kind, 2, ready_cluster(2))) == ("Healthy", "Ready: K3s v1.31.4+k3s1 on 3 servers")


def test_progressing_before_first_status_and_while_generation_unobserved() -> None:
    assert health(resource("K3sCluster", 1, None))[0] == "Progressing"
    status = ready_cluster(2)  # Ready=True, but for generation 2 while the spec is at 3
    state, message = health(resource("K3sCluster", 3, status))
    assert state == "Progressing"
    assert "generation 3" in message


def test_progressing_while_ready_condition_is_stale() -> None:
    status = ready_cluster(2)
    status["observedGeneration"] = 3  # status written for 3, Ready still from 2
    assert health(resource("K3sCluster", 3, status))[0] == "Progressing"


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


def test_degraded_when_stalled_with_what_to_fix() -> None:
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
    # Stalled wins even before the generation is observed: the error is about the current spec.
    obj["metadata"]["generation"] = 2
    assert health(obj)[0] == "Degraded"


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
        assert cm["data"][key] == HEALTH.read_text(), f"{key} drifted from health.lua"
        # and the embedded copy itself runs
        assert health(resource("K3sCluster", 1, ready_cluster(1)), cm["data"][key])[0] == "Healthy"
