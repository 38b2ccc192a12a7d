"""Remediation (spec.remediation): reboot through Proxmox, then replace; bounded by maxUnhealthy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from k3s_deploy.api.remediation import RemediationPolicy, scaled
from k3s_deploy.ports.target import TargetNode
from k3s_deploy.services.k3scluster import remediation
from k3s_deploy.services.k3scluster.remediation import Candidate, plan
from k3s_deploy.services.proxmoxvm.work import RESTART_ANNOTATION

from .fakes import FakeTarget
from .test_reconcile import NS, World, cluster_body, cond

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_plan_reboots_first_then_replaces_after_another_timeout() -> None:
    nodes = [
        Candidate("ok", None),
        Candidate("fresh", ago(30)),  # NotReady, not for long
        Candidate("down", ago(400)),  # never rebooted
        Candidate("rebooted", ago(400), rebooted_at=ago(100)),  # rebooted, not a timeout ago
        Candidate("still", ago(800), rebooted_at=ago(400)),
        Candidate("again", ago(100 + 300), rebooted_at=ago(900)),  # rebooted in an earlier outage
        Candidate("adopted", ago(800), rebooted_at=ago(400), replaceable=False),
    ]
    got = plan(nodes, timeout_s=300, max_unhealthy="100%", now=NOW)
    assert got.blocked is None
    assert got.unhealthy == ["down", "rebooted", "still", "again", "adopted"]
    assert (got.reboot, got.waiting, got.replace, got.not_replaceable) == (
        ["down", "again"],
        ["rebooted"],
        ["still"],
        ["adopted"],
    )


@pytest.mark.parametrize(
    ("max_unhealthy", "unhealthy", "total", "blocked"),
    [
        (1, 1, 5, False),
        (1, 2, 5, True),
        ("40%", 2, 5, False),
        ("40%", 3, 5, True),
        ("40%", 1, 2, True),
        (0, 1, 3, True),
    ],
)
def test_max_unhealthy_bounds_it(max_unhealthy: int | str, unhealthy: int, total: int, blocked: bool) -> None:
    nodes = [Candidate(f"n{i}", ago(600) if i < unhealthy else None) for i in range(total)]
    got = plan(nodes, timeout_s=300, max_unhealthy=max_unhealthy, now=NOW)
    assert (got.blocked is not None) == blocked
    assert (got.reboot == []) == blocked
    if blocked:
        assert (
            got.blocked is not None and "no remediation" in got.blocked and str(max_unhealthy) in got.blocked
        )


def test_max_unhealthy_is_int_or_percent() -> None:
    assert scaled("40%", 5) == 2 and scaled("100%", 3) == 3 and scaled(2, 9) == 2
    for bad in (-1, "101%", "40", "x%", True):
        with pytest.raises(ValidationError):
            RemediationPolicy.model_validate({"maxUnhealthy": bad})
    assert RemediationPolicy.model_validate({}).max_unhealthy == "100%"


class AgingTarget(FakeTarget):
    """FakeTarget whose NotReady nodes say since when."""

    since: dict[str, datetime]

    async def nodes(self, kubeconfig: str) -> list[TargetNode]:
        out = await super().nodes(kubeconfig)
        return [
            TargetNode(n.name, n.ready, n.kubelet_version, ready_changed_at=self.since.get(n.name))
            for n in out
        ]


async def world(**spec: Any) -> tuple[World, dict[str, Any], AgingTarget]:
    w = World()
    target = AgingTarget(w.ssh)
    target.since = {}
    w.target = w.deps.target = target
    body = cluster_body(1, 2, **spec)
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    return w, body, target


def annotation(w: World, name: str) -> str | None:
    value = (w.objects.children[(NS, name)]["metadata"].get("annotations") or {}).get(RESTART_ANNOTATION)
    return str(value) if value is not None else None


async def test_a_node_notready_too_long_is_rebooted_then_replaced() -> None:
    w, body, target = await world(remediation={"nodeNotReadyTimeoutSeconds": 60, "maxUnhealthy": 1})
    target.not_ready.add("demo-agent-0")
    target.since["demo-agent-0"] = datetime.now(UTC) - timedelta(seconds=30)
    out = await w.pass_(body)
    assert annotation(w, "demo-agent-0") is None, "not before the timeout"
    assert cond(out, remediation.CONDITION)["reason"] == "Healthy"

    target.since["demo-agent-0"] = datetime.now(UTC) - timedelta(seconds=90)
    out = await w.pass_(body)
    mark = annotation(w, "demo-agent-0")
    assert mark is not None and mark.startswith(remediation.MARK)
    assert [e.reason for e in out.events if e.reason.startswith("Remediation")] == ["RemediationReboot"]
    assert [(x["node"], x["action"]) for x in out.status["remediations"]] == [("demo-agent-0", "Reboot")]
    assert cond(out, remediation.CONDITION)["reason"] == "Remediating"

    out = await w.pass_(body)  # the reboot is recorded on the ProxmoxVM: not asked twice
    assert annotation(w, "demo-agent-0") == mark and not [
        e for e in out.events if e.reason.startswith("Remed")
    ]
    assert w.objects.deleted_children == []

    # one timeout after the reboot and still NotReady: the VM is replaced
    rebooted = datetime.now(UTC) - timedelta(seconds=61)
    w.objects.children[(NS, "demo-agent-0")]["metadata"]["annotations"][RESTART_ANNOTATION] = (
        remediation.MARK + rebooted.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    out = await w.pass_(body)
    assert w.objects.deleted_children == ["demo-agent-0"]
    assert [e.reason for e in out.events if e.reason.startswith("Remediation")] == ["RemediationReplace"]
    assert [x["action"] for x in out.status["remediations"]] == ["Reboot", "Replace"]


async def test_too_many_unhealthy_means_no_action_and_the_condition_says_so() -> None:
    w, body, target = await world(remediation={"nodeNotReadyTimeoutSeconds": 60, "maxUnhealthy": "34%"})
    for name in ("demo-agent-0", "demo-agent-1"):
        target.not_ready.add(name)
        target.since[name] = datetime.now(UTC) - timedelta(seconds=600)
    out = await w.pass_(body)
    c = cond(out, remediation.CONDITION)
    assert (c["status"], c["reason"]) == ("False", "TooManyUnhealthy")
    assert "2 of 3 nodes" in c["message"] and "allows 1" in c["message"]
    assert annotation(w, "demo-agent-0") is None and annotation(w, "demo-agent-1") is None
    assert [e.reason for e in out.events if e.type == "Warning"] == ["TooManyUnhealthy"]
    out = await w.pass_(body)
    assert not [e for e in out.events if e.reason == "TooManyUnhealthy"], "said once, not every pass"


async def test_off_by_default() -> None:
    w, body, target = await world()
    target.not_ready.add("demo-agent-0")
    target.since["demo-agent-0"] = datetime.now(UTC) - timedelta(days=1)
    out = await w.pass_(body)
    assert annotation(w, "demo-agent-0") is None and w.objects.deleted_children == []
    assert all(c["type"] != remediation.CONDITION for c in out.status["conditions"])


async def test_a_paused_cluster_is_never_remediated_even_when_its_pass_fails() -> None:
    """Paused means hands off: a pass that ends in an error while paused (here the SSH key Secret is
    gone while a node's settings change is in flight) must not reboot or replace a VM."""
    w, body, target = await world(remediation={"nodeNotReadyTimeoutSeconds": 60, "maxUnhealthy": 1})
    target.not_ready.add("demo-agent-0")
    target.since["demo-agent-0"] = datetime.now(UTC) - timedelta(seconds=600)
    body["spec"]["paused"] = True
    body["metadata"]["generation"] += 1
    node = next(n for n in body["status"]["nodes"] if n["name"] == "demo-agent-1")
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    node["operation"] = {
        "kind": "WaitReady",
        "action": "Reconfigure",
        "startedTime": started,
        "timeoutSeconds": 600,
    }
    del w.objects.secrets[(NS, "ssh")]
    out = await w.pass_(body)
    assert out.error is not None  # the paused pass did fail
    assert annotation(w, "demo-agent-0") is None and w.objects.deleted_children == []
    assert not [e for e in out.events if e.reason.startswith("Remediation")]
