"""ProxmoxVM end to end: the operator process, the real apiserver and the Proxmox VE simulator.

Each test gets a fresh namespace, a fresh simulator (sample inventory: templates 9000-9003, VMs 100-102
and 110) and its own operator process watching that namespace.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@k3s-deploy"


class Env:
    """What a test needs at hand: namespace, kubectl, simulator, operator, and small helpers."""

    def __init__(self, namespace: str, kubectl: Any, sim: Any, kube_json: Any, wait_for: Any) -> None:
        self.ns, self.kubectl, self.sim, self._json, self.wait_for = (
            namespace,
            kubectl,
            sim,
            kube_json,
            wait_for,
        )

    def secret(self, name: str = "pve", **overrides: str) -> None:
        data = {
            "url": self.sim.url,
            "tokenId": self.sim.token_id,
            "tokenSecret": self.sim.token_secret,
            "caCert": Path(self.sim.ca).read_text(),
            **overrides,
        }
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": self.ns},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def apply(self, name: str, spec: dict[str, Any], **meta: Any) -> None:
        body = {
            "apiVersion": "k3sdeploy.io/v1alpha1",
            "kind": "ProxmoxVM",
            "metadata": {"name": name, "namespace": self.ns, **meta},
            "spec": {"credentialsRef": {"name": "pve"}, **spec},
        }
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))

    def get(self, name: str) -> dict[str, Any]:
        return self._json("pvm", name, "-n", self.ns) or {}

    def condition(self, name: str, type_: str, obj: dict[str, Any] | None = None) -> dict[str, Any]:
        obj = obj if obj is not None else self.get(name)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def wait_condition(
        self, name: str, type_: str, status: str = "True", reason: str | None = None, timeout: float = 90
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get(name)
            cond = self.condition(name, type_, obj)
            gen = (obj.get("metadata") or {}).get("generation")
            fresh = (obj.get("status") or {}).get("observedGeneration") == gen
            if fresh and cond.get("status") == status and (reason is None or cond.get("reason") == reason):
                return obj
            return None

        try:
            result: dict[str, Any] = self.wait_for(
                check, timeout=timeout, what=f"{name} {type_}={status} {reason or ''}"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast status: {self.get(name).get('status')}") from None
        return result

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = (self._json("events", "-n", self.ns) or {}).get("items", [])
        return [e for e in items if e.get("reason") == reason]

    def vm(self, vmid: int) -> dict[str, Any] | None:
        for item in self.sim.api().cluster.resources.get(type="vm"):
            if int(item["vmid"]) == vmid:
                return dict(item)
        return None

    def config(self, vmid: int) -> dict[str, Any]:
        vm = self.vm(vmid)
        assert vm is not None, f"VM {vmid} does not exist"
        return dict(self.sim.api().nodes(vm["node"]).qemu(vmid).config.get())

    def vmids(self) -> set[int]:
        return {int(i["vmid"]) for i in self.sim.api().cluster.resources.get(type="vm")}


@pytest.fixture
def env(
    namespace: str,
    kubectl: Any,
    pve_sim: Any,
    kube_json: Any,
    wait_for: Any,
    start_operator: Callable[..., Any],
) -> Env:
    environment = Env(namespace, kubectl, pve_sim, kube_json, wait_for)
    environment.secret()
    environment.operator = start_operator(namespace)  # type: ignore[attr-defined]
    return environment


def clone_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "node": "pve2",
        "source": {"clone": {"template": {"name": "ubuntu-2404-cloud"}}},
        "resources": {"cores": 2, "memoryMiB": 1024, "diskGiB": 8},
        "cloudInit": {"user": "k3s", "sshAuthorizedKeys": [KEY], "ipConfig": {"dhcp": True}},
        "tags": ["k3s-test"],
    }
    spec.update(extra)
    return spec


def test_clone_configure_start_ready(env: Env) -> None:
    before = env.vmids()
    env.apply("web-1", clone_spec())
    obj = env.wait_condition("web-1", "Ready")
    status = obj["status"]
    vmid = status["vmid"]
    assert vmid not in before and status["node"] == "pve2" and status["powerState"] == "Running"
    assert status["addresses"] and all(not a.startswith("127.0.0.1") for a in status["addresses"])
    config = env.config(vmid)
    assert config["cores"] == 2 and int(config["memory"]) == 1024 and "size=8G" in config["scsi0"]
    assert config["ciuser"] == "k3s" and config["ipconfig0"] == "ip=dhcp"
    tags = set(config["tags"].split(";"))
    uid = obj["metadata"]["uid"].replace("-", "")[:16]
    assert {"k3s-test", f"k3sdeploy-{uid}"} <= tags
    assert status.get("taskRef") is None
    for reason in ("CloneStarted", "Configured", "StartStarted"):
        assert env.events(reason), reason
    assert env.vmids() - before == {vmid}


def _patch(env: Env, name: str, patch: dict[str, Any]) -> None:
    import json

    env.kubectl("patch", "pvm", name, "-n", env.ns, "--type", "merge", "-p", json.dumps(patch))


def test_adopt_ambiguous_then_by_name_and_retain_on_delete(env: Env) -> None:
    env.apply("agent", {"source": {"existing": {"tags": ["k3s-agent"]}}, "tags": ["adopted"]})
    stalled = env.wait_condition("agent", "Stalled", reason="AmbiguousVM")
    message = env.condition("agent", "Stalled", stalled)["message"]
    assert "pve2/101" in message and "pve3/102" in message
    assert env.events("AmbiguousVM")
    before = env.config(101)
    _patch(env, "agent", {"spec": {"source": {"existing": {"name": "legacy-k3s-agent-1"}}}})
    obj = env.wait_condition("agent", "Ready")
    assert obj["status"]["vmid"] == 101 and obj["status"]["adopted"] is True
    assert obj["status"]["deletionPolicy"] == "Retain" and obj["status"]["addresses"]
    after = env.config(101)
    # no ownership tag on an adopted VM; the admin's marker (sample inventory) stays
    assert set(after["tags"].split(";")) == {"k3s-agent", "legacy", "k3sdeploy-adoptable", "adopted"}
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)} - {"digest"}
    assert changed == {"tags"}
    env.kubectl("delete", "pvm", "agent", "-n", env.ns, "--timeout=60s")
    vm = env.vm(101)
    assert vm is not None and vm["status"] == "running"


def test_configure_restart_power_cycle_and_drift(env: Env) -> None:
    env.apply("db", clone_spec())
    obj = env.wait_condition("db", "Ready")
    vmid = obj["status"]["vmid"]
    node = obj["status"]["node"]
    api = env.sim.api()
    # a change the running VM can only take at the next boot -> PendingChanges, no restart by itself
    _patch(env, "db", {"spec": {"resources": {"memoryMiB": 2048}}})
    obj = env.wait_condition("db", "PendingChanges")
    assert "memory" in obj["status"]["pendingChanges"]
    assert env.events("Configured")
    assert int(api.nodes(node).qemu(vmid).config.get(current=1)["memory"]) == 1024
    # restart on request applies it
    _patch(env, "db", {"metadata": {"annotations": {"k3sdeploy.io/restart": "1"}}})
    env.wait_for(
        lambda: int(api.nodes(node).qemu(vmid).config.get(current=1)["memory"]) == 2048,
        timeout=60,
        what="memory applied by the restart",
    )
    obj = env.wait_condition("db", "Ready")
    assert env.condition("db", "PendingChanges", obj) == {}
    assert obj["metadata"]["annotations"]["k3sdeploy.io/restart-handled"] == "1"
    assert env.events("RebootStarted")
    # power off declaratively
    _patch(env, "db", {"spec": {"powerState": "Stopped"}})
    obj = env.wait_condition("db", "PoweredOn", status="False", reason="Stopped")
    assert env.vm(vmid)["status"] == "stopped" and obj["status"]["addresses"] == []  # type: ignore[index]
    env.wait_condition("db", "Ready")
    # drift: started outside the operator -> shut down again at the next resync
    env.sim.wait_task(api.nodes(node).qemu(vmid).status.start.post())
    env.wait_for(lambda: (env.vm(vmid) or {}).get("status") == "stopped", timeout=60, what="drift repaired")
    # and back on
    _patch(env, "db", {"spec": {"powerState": "Running"}})
    obj = env.wait_condition("db", "AgentReady")
    assert obj["status"]["addresses"]
    # drift: our tags removed outside -> put back (tags show in the shared VM list: no per-VM read)
    api.nodes(node).qemu(vmid).config.put(tags="other")
    env.wait_for(
        lambda: "k3s-test" in str(api.nodes(node).qemu(vmid).config.get().get("tags", "")),
        timeout=60,
        what="tags restored",
    )


def test_delete_under_each_policy(env: Env) -> None:
    before = env.vmids()
    for policy in ("Delete", "Stop", "Retain"):
        env.apply(f"vm-{policy.lower()}", clone_spec(deletionPolicy=policy))
    vmids = {
        p: env.wait_condition(f"vm-{p.lower()}", "Ready")["status"]["vmid"]
        for p in ("Delete", "Stop", "Retain")
    }
    assert len(set(vmids.values())) == 3 and not set(vmids.values()) & before
    for policy in ("Delete", "Stop", "Retain"):
        env.kubectl("delete", "pvm", f"vm-{policy.lower()}", "-n", env.ns, "--timeout=90s")
    assert env.vm(vmids["Delete"]) is None
    assert (env.vm(vmids["Stop"]) or {}).get("status") == "stopped"
    assert (env.vm(vmids["Retain"]) or {}).get("status") == "running"
    assert env.events("Retained")
    # waiting for the stop and destroy tasks is routine: kopf must not log it as an error
    lines = env.operator.logs().splitlines()  # type: ignore[attr-defined]
    waits = [line for line in lines if "failed temporarily" in line and "vm-delete" in line]
    assert waits and not [line for line in waits if " ERROR " in line], waits


def test_bad_inputs_stall_with_a_reason(env: Env) -> None:
    env.apply("no-template", clone_spec(source={"clone": {"template": {"name": "does-not-exist"}}}))
    env.secret(
        "readonly", tokenId="root@pam!readonly", tokenSecret=env.sim.token_secret_of("root@pam!readonly")
    )
    env.apply("no-privilege", {**clone_spec(), "credentialsRef": {"name": "readonly"}})
    bad_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5A broken@key"  # passes the CRD pattern, not base64
    env.apply("bad-key", clone_spec(cloudInit={"user": "k3s", "sshAuthorizedKeys": [bad_key]}))
    env.apply("shrink", clone_spec(powerState="Stopped"))
    obj = env.wait_condition("no-template", "Stalled", reason="TemplateNotFound")
    assert "does-not-exist" in env.condition("no-template", "Stalled", obj)["message"]
    obj = env.wait_condition("no-privilege", "Stalled", reason="ProxmoxPermissionDenied")
    assert env.condition("no-privilege", "Ready", obj)["status"] == "False"
    obj = env.wait_condition("bad-key", "Stalled", reason="ProxmoxRejected")
    assert "key" in env.condition("bad-key", "Stalled", obj)["message"].lower()
    env.wait_condition("shrink", "Ready")
    _patch(env, "shrink", {"spec": {"resources": {"diskGiB": 4}}})
    obj = env.wait_condition("shrink", "Stalled", reason="DiskShrinkRefused")
    assert "size=8G" in env.config(obj["status"]["vmid"])["scsi0"]
    # a permanent error is not retried in a storm: at most one attempt per resync interval
    env.sim.reset_counts()
    import time

    time.sleep(7)
    counts = env.sim.counts()
    clones = sum(n for key, n in counts.items() if key.endswith("/clone"))
    assert clones <= 6, counts  # two stalled clones, 3 s resync
    # fixing the spec recovers
    _patch(env, "shrink", {"spec": {"resources": {"diskGiB": 10}}})
    obj = env.wait_condition("shrink", "Ready")
    assert "size=10G" in env.config(obj["status"]["vmid"])["scsi0"]
    assert env.condition("shrink", "Stalled", obj) == {}


def test_injected_faults_converge(env: Env) -> None:
    before = env.vmids()
    env.sim.set_faults(
        latency=0.05,
        errors=[
            {"match": "POST */clone", "status": 503, "message": "Service Unavailable", "remaining": 2},
            {
                "match": "GET /cluster/resources",
                "status": 500,
                "message": "simulated failure",
                "remaining": 2,
            },
            {"match": "PUT */config", "status": 500, "message": "VM is locked (backup)", "remaining": 1},
        ],
        taskFailures=[{"type": "qmstart", "message": "start failed: VM is locked (backup)", "remaining": 1}],
    )
    env.apply("flaky", clone_spec())
    obj = env.wait_condition("flaky", "Ready", timeout=150)
    assert env.vmids() - before == {obj["status"]["vmid"]}
    reasons = {e["reason"] for e in (env._json("events", "-n", env.ns) or {}).get("items", [])}
    assert {"ProxmoxUnavailable", "TaskFailed"} <= reasons or "ProxmoxBusy" in reasons, reasons


def test_vm_deleted_outside_is_recloned(env: Env) -> None:
    env.apply("phoenix", clone_spec(powerState="Stopped"))
    obj = env.wait_condition("phoenix", "Ready")
    vmid, node = obj["status"]["vmid"], obj["status"]["node"]
    env.sim.wait_task(env.sim.api().nodes(node).qemu(vmid).delete(purge=1))
    env.wait_for(lambda: env.events("VMMissing"), timeout=60, what="VMMissing event")
    obj = env.wait_condition("phoenix", "Ready")
    assert env.vm(obj["status"]["vmid"]) is not None


def test_concurrent_clones_from_two_operators_never_collide(
    env: Env, kubectl: Any, start_operator: Callable[..., Any], kube_json: Any, wait_for: Any
) -> None:
    """Two operator processes (two namespaces, one Proxmox) clone at the same moment."""
    other_ns = f"{env.ns}-b"
    kubectl("create", "namespace", other_ns)
    try:
        other = Env(other_ns, kubectl, env.sim, kube_json, wait_for)
        other.secret()
        start_operator(other_ns)
        env.sim.set_faults(latency=0.05)
        before = env.vmids()
        for i in range(3):
            env.apply(f"a{i}", clone_spec(powerState="Stopped"))
            other.apply(f"b{i}", clone_spec(powerState="Stopped"))
        got = [env.wait_condition(f"a{i}", "Ready", timeout=120)["status"]["vmid"] for i in range(3)]
        got += [other.wait_condition(f"b{i}", "Ready", timeout=120)["status"]["vmid"] for i in range(3)]
        assert len(set(got)) == 6, got
        assert env.vmids() - before == set(got)
    finally:
        kubectl("delete", "namespace", other_ns, "--wait=false", check=False)


def test_unreachable_proxmox_during_deletion_then_orphan(env: Env) -> None:
    env.apply("stranded", clone_spec(powerState="Stopped"))
    obj = env.wait_condition("stranded", "Ready")
    vmid = obj["status"]["vmid"]
    env.sim.stop()  # Proxmox gone for good
    env.kubectl("delete", "pvm", "stranded", "-n", env.ns, "--wait=false")

    def deleting_blocked() -> dict[str, Any] | None:
        cond = env.condition("stranded", "Deleting")
        return cond if cond.get("status") == "False" and cond.get("reason") == "ProxmoxUnavailable" else None

    cond = env.wait_for(deleting_blocked, timeout=60, what="Deleting=False ProxmoxUnavailable")
    assert "k3sdeploy.io/orphan" in cond["message"]
    assert env.get("stranded")  # the finalizer holds it
    env.kubectl("annotate", "pvm", "stranded", "-n", env.ns, "k3sdeploy.io/orphan=true")
    env.wait_for(lambda: not env.get("stranded"), timeout=90, what="object released")
    assert env.events("Orphaned")
    assert vmid
