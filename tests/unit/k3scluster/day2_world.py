"""A fake world for day-2 reconcile tests: the shared fakes plus cordon/drain/delete, uninstall, a
channel server and one ordered log of every node operation (unit tests only)."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from k3s_deploy.ports.ssh import CommandResult, SshTarget
from k3s_deploy.ports.target import TargetNode, TargetPod
from k3s_deploy.services.k3scluster.reconcile import Deps, Outcome, reconcile

from .fakes import PVE_SECRET, FakeAgents, FakeHost, FakeObjects, FakeSsh, FakeTarget

NS = "team"
A, B, C = "v1.31.4+k3s1", "v1.32.0+k3s1", "v1.33.1+k3s1"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n"


def body(servers: int = 3, agents: int = 2, **spec_over: Any) -> dict[str, Any]:
    template = {"clone": {"template": {"name": "debian-12"}}, "cloudInit": {"user": "root"}}
    spec: dict[str, Any] = {
        "credentialsRef": {"name": "pve"},
        "k3s": {"version": A},
        "ssh": {"privateKeySecretRef": {"name": "ssh", "key": "ssh-privatekey"}},
        "servers": {"replicas": servers, "template": template},
        "agents": {"replicas": agents, "template": template},
        "network": {
            "ipPool": {"start": "10.0.0.10", "end": "10.0.0.40", "prefixLength": 24},
            "gateway": "10.0.0.1",
        },
    }
    spec.update(spec_over)
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "K3sCluster",
        "metadata": {
            "name": "demo",
            "namespace": NS,
            "uid": "abcdef12-0000-0000-0000-000000000000",
            "generation": 1,
        },
        "spec": spec,
    }


class Channels:
    def __init__(self, stable: str = A) -> None:
        self.table = {"stable": stable, "latest": C}
        self.calls = 0

    async def fetch(self, url: str) -> Any:
        self.calls += 1
        return {"data": [{"id": k, "name": k, "latest": v} for k, v in self.table.items()]}


class Ssh(FakeSsh):
    def __init__(self, ops: list[tuple[str, str]]) -> None:
        super().__init__()
        self.ops = ops
        self.crash_after_install: str | None = None

    def name_of(self, host: str) -> str:
        scripts = self.hosts[host].scripts
        found = re.search(r"--node-name (\S+)", scripts[-1]) if scripts else None
        return found.group(1) if found else host

    async def run(
        self,
        target: SshTarget,
        command: str,
        *,
        input: str | None = None,
        sudo: bool | None = None,
        timeout_s: float = 60.0,
        check: bool = False,
    ) -> CommandResult:
        if "uninstall.sh" in command:
            host = self._check(target)
            self.ops.append(("uninstall", self.name_of(target.host)))
            host.version, host.etcd = None, False
            return host.result(0, "", "")
        result = await super().run(target, command, input=input, timeout_s=timeout_s)
        if command == "sh -s" and input:
            name = self.name_of(target.host)
            self.ops.append(("convert" if "systemctl restart k3s" in input else "install", name))
            if self.crash_after_install == name:
                raise RuntimeError("operator killed")
        return result


class Target(FakeTarget):
    def __init__(self, ssh: Ssh, ops: list[tuple[str, str]]) -> None:
        super().__init__(ssh)
        self.ops = ops
        self.cordoned: set[str] = set()
        self.deleted: dict[str, int] = {}  # node -> installs seen when it was deleted
        # Nodes a machine that is gone left registered (NotReady, old version) until deleted
        self.stale: set[str] = set()

    async def nodes(self, kubeconfig: str) -> list[TargetNode]:
        out = []
        for node in await super().nodes(kubeconfig):
            if node.name in self.deleted and self.deleted[node.name] == self._installs(node.name):
                continue
            out.append(dataclasses.replace(node, unschedulable=node.name in self.cordoned))
        names = {node.name for node in out}
        out.extend(TargetNode(name, False, A) for name in sorted(self.stale - names))
        return out

    def _installs(self, name: str) -> int:
        return sum(1 for op, n in self.ops if op == "install" and n == name)

    async def set_unschedulable(self, kubeconfig: str, node: str, unschedulable: bool) -> bool:
        self.ops.append(("cordon" if unschedulable else "uncordon", node))
        (self.cordoned.add if unschedulable else self.cordoned.discard)(node)
        return True

    async def pods_on(self, kubeconfig: str, node: str) -> list[TargetPod]:
        self.ops.append(("drain", node))  # a drain lists the node's pods (none here) once
        return []

    async def evict(self, kubeconfig: str, namespace: str, name: str) -> bool:
        raise AssertionError("no pod to evict in this world")

    async def delete_node(self, kubeconfig: str, node: str) -> bool:
        self.ops.append(("delete-node", node))
        self.deleted[node] = self._installs(node)
        self.stale.discard(node)
        self.meta.pop(node, None)  # a node registering again starts from its install's flags
        return True


class World:
    def __init__(self, channels: Channels | None = None) -> None:
        self.ops: list[tuple[str, str]] = []
        self.objects = FakeObjects()
        self.ssh = Ssh(self.ops)
        self.target = Target(self.ssh, self.ops)
        self.channels = channels or Channels()
        self.agents = FakeAgents(self.objects, self.ssh)
        self.deps = Deps(
            objects=self.objects,
            ssh=self.ssh,
            target=self.target,
            channels=self.channels,
            proxmox=lambda _credentials: self.agents,  # type: ignore[arg-type,return-value]
        )
        self.objects.secrets[(NS, "pve")] = copy.deepcopy(PVE_SECRET)
        self.objects.secrets[(NS, "ssh")] = {
            "data": {"ssh-privatekey": KEY.encode()},
            "labels": {},
            "owner": None,
        }

    def boot(self) -> None:
        self.objects.boot_all()
        for child in self.objects.children.values():
            ip = child["status"]["addresses"][0]
            child["status"]["powerState"] = "Running"
            self.ssh.hosts.setdefault(ip, FakeHost(host_key=f"SHA256:key-of-{ip}", authorized_key=KEY))

    def ip(self, name: str) -> str:
        return str(self.objects.children[(NS, name)]["status"]["addresses"][0])

    async def pass_(self, b: dict[str, Any]) -> Outcome:
        out = await reconcile(b, self.deps, generation=b["metadata"]["generation"])
        b["status"] = copy.deepcopy(out.status)
        return out

    async def settle(self, b: dict[str, Any], *, passes: int = 20) -> Outcome:
        """Passes until one needs no quick requeue (Ready, Stalled, or resting)."""
        for _ in range(passes):
            self.boot()
            out = await self.pass_(b)
            if out.requeue_after is None or (out.error is not None and not out.error.transient):
                return out
        raise AssertionError(f"did not settle: {b['status'].get('conditions')}")

    def of(self, op: str) -> list[str]:
        return [n for o, n in self.ops if o == op]


def cond(out: Outcome, type_: str) -> dict[str, Any]:
    return next((c for c in out.status["conditions"] if c["type"] == type_), {})


def bump(b: dict[str, Any]) -> None:
    b["metadata"]["generation"] += 1
