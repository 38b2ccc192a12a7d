"""Clean teardown (spec.teardown): K3s is uninstalled from the VMs a deleted cluster keeps, with
bounded attempts for a VM that cannot be reached."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from k3s_deploy import errors
from k3s_deploy.ports.ssh import CommandResult, SshTarget
from k3s_deploy.services.k3scluster import cleanup

from .fakes import AnsweringSsh
from .test_reconcile import NS, World, cluster_body


class UninstallingSsh(AnsweringSsh):
    """Hosts run the uninstall scripts (removing K3s) and record them."""

    def __init__(self) -> None:
        super().__init__()
        self.uninstalled: list[str] = []

    def answer(self, target: SshTarget, command: str) -> CommandResult | None:
        if "uninstall.sh" not in command:
            return None
        host = self._check(target)
        if host.version is None:
            return host.result(0)
        self.uninstalled.append(command.split()[3] + "@" + target.host)
        host.version = host.kubeconfig = None
        return host.result(0, cleanup._DONE + "\n")


Events = list[tuple[str, str, str]]


async def ready_world(policy: str, **spec: Any) -> tuple[World, dict[str, Any], UninstallingSsh]:
    w = World()
    ssh = UninstallingSsh()
    w.ssh = w.deps.ssh = ssh
    w.target.ssh = w.agents.ssh = ssh
    body = cluster_body(1, 1, **spec)
    for role in ("servers", "agents"):
        body["spec"][role]["template"]["deletionPolicy"] = policy
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert next(c for c in out.status["conditions"] if c["type"] == "Ready")["status"] == "True"
    return w, body, ssh


def sink(events: Events) -> cleanup.EventSink:
    def add(type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        events.append((type_, reason, message))

    return add


@pytest.mark.parametrize("policy", ["Retain", "Stop"])
async def test_kept_vms_are_uninstalled_with_the_role_script(policy: str) -> None:
    w, body, ssh = await ready_world(policy)
    events: Events = []
    await cleanup.uninstall_kept(w.deps, body, attempt=0, event=sink(events))
    assert sorted(s.split("@")[0] for s in ssh.uninstalled) == [
        "/usr/local/bin/k3s-agent-uninstall.sh",
        "/usr/local/bin/k3s-uninstall.sh",
    ]
    assert all(h.version is None for h in ssh.hosts.values())
    assert [e[1] for e in events] == ["Uninstalled", "Uninstalled"]
    # a second attempt (the handler retried) finds nothing installed and says nothing
    events.clear()
    await cleanup.uninstall_kept(w.deps, body, attempt=1, event=sink(events))
    assert events == [] and len(ssh.uninstalled) == 2


async def test_deleted_vms_and_leave_are_not_touched() -> None:
    w, body, ssh = await ready_world("Delete")
    await cleanup.uninstall_kept(w.deps, body, attempt=0, event=sink([]))
    assert ssh.uninstalled == []
    w, body, ssh = await ready_world("Retain", teardown="Leave")
    await cleanup.uninstall_kept(w.deps, body, attempt=0, event=sink([]))
    assert ssh.uninstalled == [] and all(h.version for h in ssh.hosts.values())


async def test_an_unreachable_vm_is_retried_a_few_times_then_released_with_a_warning() -> None:
    w, body, ssh = await ready_world("Retain")
    agent_ip = next(c["status"]["addresses"][0] for (_, n), c in w.objects.children.items() if "agent" in n)
    ssh.hosts[agent_ip].reachable = False
    events: Events = []
    for attempt in range(cleanup.MAX_ATTEMPTS - 1):
        with pytest.raises(errors.NotYet) as waiting:
            await cleanup.uninstall_kept(w.deps, body, attempt=attempt, event=sink(events))
        assert "demo-agent-0" in waiting.value.message
        assert waiting.value.after_s is not None and waiting.value.after_s <= 10
    await cleanup.uninstall_kept(w.deps, body, attempt=cleanup.MAX_ATTEMPTS - 1, event=sink(events))
    reasons = [(e[1], e[2].split(" ")[3] if e[1] == "Uninstalled" else "") for e in events]
    assert reasons.count(("Uninstalled", "demo-server-0")) == 1
    warning = [e for e in events if e[1] == "UninstallSkipped"]
    assert len(warning) == 1 and warning[0][0] == "Warning"
    assert "demo-agent-0" in warning[0][2] and "k3s-agent-uninstall.sh" in warning[0][2]
    assert ssh.hosts[agent_ip].version is not None


async def test_a_powered_off_or_unpinned_vm_is_released_after_the_attempts() -> None:
    w, body, ssh = await ready_world("Stop")
    for (_, name), child in w.objects.children.items():
        if "agent" in name:
            child["status"]["powerState"] = "Stopped"
    del w.objects.secrets[(NS, "demo-host-keys")]  # no pin for the server either
    body["status"]["nodes"] = [{**n, "hostKeyFingerprint": None} for n in body["status"]["nodes"]]
    events: Events = []
    with pytest.raises(errors.NotYet):
        await cleanup.uninstall_kept(w.deps, body, attempt=0, event=sink(events))
    await cleanup.uninstall_kept(w.deps, body, attempt=cleanup.MAX_ATTEMPTS - 1, event=sink(events))
    messages = sorted(e[2] for e in events if e[1] == "UninstallSkipped")
    assert len(messages) == 2 and ssh.uninstalled == []
    assert "powered off" in messages[0] and "no pinned SSH host key" in messages[1]
