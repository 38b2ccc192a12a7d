"""A guest whose VM has just become ready is still starting: no sshd yet, or no host key file yet, is a
wait looked at again soon, not a failure (services/k3scluster/settling.py). Later it is a failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import settling
from k3s_deploy.services.k3scluster.state import NodeView

from .fakes import key_line
from .test_hostkeys import _missing
from .test_reconcile import NS, World, cluster_body, cond


def _ready_since(w: World, seconds_ago: float) -> None:
    """Every child VM's Ready condition turned True ``seconds_ago``, as the ProxmoxVM records it."""
    at = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for child in w.objects.children.values():
        for c in child["status"]["conditions"]:
            if c["type"] == "Ready":
                c["lastTransitionTime"] = at


async def _booted(seconds_ago: float) -> tuple[World, dict[str, object]]:
    w, body = World(), cluster_body(1, 0)
    await w.pass_(body)
    w.boot()
    _ready_since(w, seconds_ago)
    return w, body


def _conditions(body: dict[str, object]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in body["status"]["conditions"]}  # type: ignore[index]


async def test_a_key_file_not_generated_yet_on_a_vm_just_ready_is_waited_for_quietly() -> None:
    w, body = await _booted(2)
    w.agents.read_guest_file = _missing  # type: ignore[method-assign]
    out = await w.pass_(body)
    conds = _conditions(body)
    assert conds.get("Stalled", {}).get("status") != "True", conds.get("Stalled")
    assert conds["Reconciling"]["status"] == "True" and conds["Reconciling"]["reason"] == "HostKeyUnavailable"
    assert "still starting" in conds["Reconciling"]["message"]
    assert out.requeue_after is not None and out.requeue_after <= 1.0
    assert out.error is None and not [e for e in out.events if e.type == "Warning"]
    assert w.ssh.log == []  # nothing was run on a node whose key is not known
    # cloud-init has written the keys now: the next pass pins them and goes on
    w.agents.read_guest_file = w.agents.__class__.read_guest_file.__get__(w.agents)  # type: ignore[method-assign]
    await w.pass_(body)
    assert (NS, "demo-host-keys") in w.objects.secrets
    assert w.ssh.log, "the node was probed once its key could be read"


async def test_a_key_file_still_missing_long_after_the_vm_became_ready_stalls_as_before() -> None:
    w, body = await _booted(settling.SETTLE_S + 60)
    w.agents.read_guest_file = _missing  # type: ignore[method-assign]
    out = await w.pass_(body)
    stalled = cond(out, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "HostKeyUnavailable"
    assert "qemu-guest-agent" in stalled["message"]


async def test_sshd_not_answering_yet_on_a_vm_just_ready_is_a_wait_without_a_warning() -> None:
    w, body = await _booted(1)
    for host in w.ssh.hosts.values():
        host.reachable = False
    out = await w.pass_(body)
    assert out.error is None and out.requeue_after is not None and out.requeue_after <= 1.0
    assert not [e for e in out.events if e.type == "Warning"]
    node = body["status"]["nodes"][0]  # type: ignore[index]
    assert node["state"] == "Unreachable" and "still starting" in node["message"]


async def test_sshd_silent_long_after_the_vm_became_ready_is_an_error_with_backoff() -> None:
    w, body = await _booted(settling.SETTLE_S + 60)
    for host in w.ssh.hosts.values():
        host.reachable = False
    out = await w.pass_(body)
    assert isinstance(out.error, errors.SshUnavailable)
    assert [e for e in out.events if e.type == "Warning" and e.reason == "SshUnavailable"]


async def test_a_changed_host_key_on_a_vm_just_ready_is_never_a_wait() -> None:
    w, body = await _booted(1)
    host = w.ssh.hosts[next(iter(w.ssh.hosts))]
    real = host.host_key

    async def read_real(node: str, vmid: int, path: str, *, max_bytes: int) -> bytes:
        return (key_line(real) + "\n").encode()

    w.agents.read_guest_file = read_real  # type: ignore[method-assign]
    host.host_key = "SHA256:the-man-in-the-middle"
    out = await w.pass_(body)
    assert cond(out, "Stalled")["status"] == "True"
    assert cond(out, "Stalled")["reason"] == "HostKeyMismatch"


@pytest.mark.parametrize(("age", "after"), [(0.0, 0.5), (1.0, 0.5), (8.0, 2.0), (20.0, 5.0), (100.0, 10.0)])
def test_the_looks_are_paced_by_the_vms_age(age: float, after: float) -> None:
    now = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
    view = NodeView("n", "server", False, vm_ready_since=now - timedelta(seconds=age))
    wait = settling.waiting(view, errors.SshUnavailable("connection refused"), now)
    assert wait is not None and wait.after_s == pytest.approx(after)


def test_no_ready_time_and_other_errors_are_not_softened() -> None:
    now = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
    fresh = NodeView("n", "server", False, vm_ready_since=now - timedelta(seconds=1))
    assert settling.waiting(NodeView("n", "server", False), errors.SshUnavailable("x"), now) is None
    for exc in (
        errors.SshAuthFailed("refused our key"),
        errors.HostKeyUnavailable("no agent configured"),
        errors.ProxmoxPermissionDenied("VM.GuestAgent.FileRead"),
    ):
        assert settling.waiting(fresh, exc, now) is None
