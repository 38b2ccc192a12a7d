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
    uid = obj["metadata"]["uid"].replace("-", "")[:8]
    assert {"k3s-test", f"k3sdeploy-{uid}"} <= tags
    assert status.get("taskRef") is None
    for reason in ("CloneStarted", "Configured", "StartStarted"):
        assert env.events(reason), reason
    assert env.vmids() - before == {vmid}
