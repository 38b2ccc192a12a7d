"""The K3sCluster controller's metrics, read back from the Prometheus registry: passes through the
handler's ``reconcile_once`` (result, reason, duration, the per-object phase gauge), the SSH
operations of the services (probe, install, kubeconfig, upgrade, uninstall), and the gauge dropping
the cluster when it is deleted. Ports are the in-memory fakes; the registry is the real one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from k3s_deploy import errors
from k3s_deploy.handlers import k3scluster as handler
from k3s_deploy.metrics import REGISTRY
from k3s_deploy.settings import OperatorSettings
from k3s_deploy.wiring import Runtime

from .day2_world import B, World, body

KIND = "K3sCluster"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def ssh(operation: str, result: str = "ok") -> float:
    return value("k3sdeploy_ssh_operations_total", operation=operation, result=result)


def phase(name: str) -> float:
    return value("k3sdeploy_objects", kind=KIND, phase=name)


class Kube:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def post_event(self, body: Any, *, type_: str, reason: str, message: str) -> None:
        self.events.append((reason, message))


class Harness:
    """One cluster driven through the handler as the daemon would, against the fakes of a World."""

    def __init__(self, name: str, servers: int = 1, agents: int = 1) -> None:
        self.world = World()
        self.raw = body(servers, agents)
        self.raw["metadata"]["name"] = name
        self.raw["metadata"]["uid"] = f"{name}-0000-0000-0000-000000000000"
        self.runtime = Runtime(
            settings=OperatorSettings(),
            kube=Kube(),  # type: ignore[arg-type]  # posts Events only
            sessions=None,  # type: ignore[arg-type]  # no ProxmoxVM here
            clusters=self.world.deps,
        )

    @property
    def body(self) -> kopf.Body:
        return kopf.Body(self.raw)

    @property
    def status(self) -> dict[str, Any]:
        return self.runtime.last_status.get(self.raw["metadata"]["uid"]) or {}

    async def once(self) -> None:
        self.world.boot()
        await handler.reconcile_once(self.runtime, self.body)

    async def until(self, phase: str, passes: int = 20) -> None:
        for _ in range(passes):
            await self.once()
            if self.status.get("phase") == phase:
                return
        raise AssertionError(f"never reached {phase}: {self.status.get('conditions')}")


async def test_passes_count_results_time_themselves_and_track_the_phase() -> None:
    h = Harness("mx-phase")
    ok0 = value("k3sdeploy_reconcile_total", kind=KIND, result="success", reason="Succeeded")
    n0 = value("k3sdeploy_reconcile_duration_seconds_count", kind=KIND)
    provisioning0, ready0 = phase("Provisioning"), phase("Ready")

    await handler.reconcile_once(h.runtime, h.body)  # creates the children; their VMs are not up yet
    assert h.status["phase"] == "Provisioning"
    assert phase("Provisioning") == provisioning0 + 1
    assert value("k3sdeploy_reconcile_total", kind=KIND, result="success", reason="Succeeded") == ok0 + 1
    assert value("k3sdeploy_reconcile_duration_seconds_count", kind=KIND) == n0 + 1

    await h.until("Ready")
    passes = value("k3sdeploy_reconcile_duration_seconds_count", kind=KIND) - n0
    assert passes >= 2
    assert value("k3sdeploy_reconcile_total", kind=KIND, result="success", reason="Succeeded") == ok0 + passes
    # the cluster moved: counted once, in its current phase only
    assert phase("Ready") == ready0 + 1 and phase("Provisioning") == provisioning0

    # a node that cannot be reached: a transient error, counted by its reason
    reason = errors.SshUnavailable.reason
    retry0 = value("k3sdeploy_reconcile_total", kind=KIND, result="retry", reason=reason)
    err0 = value("k3sdeploy_reconcile_errors_total", kind=KIND, reason=reason, transient="true")
    h.world.ssh.hosts[h.world.ip("mx-phase-agent-0")].reachable = False
    await h.once()
    assert value("k3sdeploy_reconcile_total", kind=KIND, result="retry", reason=reason) == retry0 + 1
    assert value("k3sdeploy_reconcile_errors_total", kind=KIND, reason=reason, transient="true") == err0 + 1

    # deleted: the gauge forgets it once its children are gone
    for key in [k for k in h.world.objects.children if k[1].startswith("mx-phase-")]:
        del h.world.objects.children[key]
    current = h.status["phase"]
    counted = phase(current)
    await handler.delete(body=h.body, memo=SimpleNamespace(runtime=h.runtime), retry=0)
    assert phase(current) == counted - 1
    assert phase("Deleting") == 0


async def test_an_invalid_spec_counts_as_stalled_invalid_spec() -> None:
    h = Harness("mx-invalid")
    h.raw["spec"]["servers"]["replicas"] = "many"
    stalled0 = value("k3sdeploy_reconcile_total", kind=KIND, result="stalled", reason="InvalidSpec")
    stalled_phase0 = phase("Stalled")
    await handler.reconcile_once(h.runtime, h.body)
    assert (
        value("k3sdeploy_reconcile_total", kind=KIND, result="stalled", reason="InvalidSpec") == stalled0 + 1
    )
    assert phase("Stalled") == stalled_phase0 + 1


async def test_a_bug_in_a_pass_counts_as_error_by_its_class() -> None:
    h = Harness("mx-bug")

    async def broken(*_: Any, **__: Any) -> Any:
        raise KeyError("oops")

    h.world.objects.list_children = broken  # type: ignore[method-assign]  # a bug below the handler
    err0 = value("k3sdeploy_reconcile_total", kind=KIND, result="error", reason="KeyError")
    with pytest.raises(KeyError):
        await handler.reconcile_once(h.runtime, h.body)
    assert value("k3sdeploy_reconcile_total", kind=KIND, result="error", reason="KeyError") == err0 + 1


async def test_ssh_operations_are_timed_by_what_they_do() -> None:
    before = {op: ssh(op) for op in ("probe", "install_k3s", "fetch_kubeconfig", "upgrade_k3s")}
    probe_h0 = value("k3sdeploy_ssh_operation_duration_seconds_count", operation="probe")
    h = Harness("mx-ssh", servers=1, agents=2)
    await h.until("Ready")
    assert ssh("install_k3s") == before["install_k3s"] + 3  # one per node
    assert ssh("probe") >= before["probe"] + 6  # each node before and after its install
    assert ssh("fetch_kubeconfig") >= before["fetch_kubeconfig"] + 1
    assert value("k3sdeploy_ssh_operation_duration_seconds_count", operation="probe") == probe_h0 + (
        ssh("probe") - before["probe"]
    )

    # an upgrade re-runs the installer: counted as upgrade_k3s, not install_k3s
    installs = ssh("install_k3s")
    h.raw["spec"]["k3s"]["version"] = B
    h.raw["metadata"]["generation"] += 1
    await h.until("Ready")
    for _ in range(20):
        if (h.status.get("upgrade") or {}).get("state") == "Complete":
            break
        await h.once()
    assert ssh("upgrade_k3s") == before["upgrade_k3s"] + 3 and ssh("install_k3s") == installs

    # a failed probe is an error of its operation
    failed0 = ssh("probe", "error")
    h.world.ssh.hosts[h.world.ip("mx-ssh-agent-1")].reachable = False
    await h.once()
    assert ssh("probe", "error") == failed0 + 1

    # scaling down uninstalls K3s from the leaving agent over SSH
    h.world.ssh.hosts[h.world.ip("mx-ssh-agent-1")].reachable = True
    uninstalls0 = ssh("uninstall_k3s")
    h.raw["spec"]["agents"]["replicas"] = 1
    h.raw["metadata"]["generation"] += 1
    for _ in range(10):
        await h.once()
        if ssh("uninstall_k3s") > uninstalls0:
            break
    assert ssh("uninstall_k3s") == uninstalls0 + 1


async def test_the_ssh_adapter_times_connecting_and_counts_a_refused_connection() -> None:
    from k3s_deploy.adapters.ssh import AsyncSshRunner
    from k3s_deploy.ports.ssh import SshTarget
    from k3s_deploy_lab.controlplane.processes import free_port
    from k3s_deploy_lab.sample_cluster import new_ssh_key

    key, _ = new_ssh_key()
    target = SshTarget(host="127.0.0.1", port=free_port(), user="root", private_key=key)  # nothing listens
    failed0 = ssh("connect", "error")
    timed0 = value("k3sdeploy_ssh_operation_duration_seconds_count", operation="connect")
    with pytest.raises(errors.SshUnavailable):
        await AsyncSshRunner(attempts=2, backoff=0.01).run(target, "true")
    assert ssh("connect", "error") == failed0 + 1  # one operation, its retries included
    assert value("k3sdeploy_ssh_operation_duration_seconds_count", operation="connect") == timed0 + 1
