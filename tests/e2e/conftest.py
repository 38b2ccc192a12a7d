"""End-to-end harness: a fresh Proxmox simulator and guests process per test, the operator as a
separate process, and helpers to apply K3sClusters and follow them (what `k3s-deploy lab up` does)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from k3s_deploy_lab import sample_cluster
from k3s_deploy_lab.controlplane import processes
from k3s_deploy_lab.guests import component as guests_component


@dataclass
class Lab:
    """One test's world. ``pve`` is the simulator's pve.json plus the guests' SSH port and installer."""

    namespace: str
    kubectl: Any
    kubeconfig: Path
    pve: dict[str, Any]
    sim: Any
    private_key: str
    public_key: str
    dir: Path
    operator: Any

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(list(objects)))

    def get(self, *args: str) -> Any:
        proc = self.kubectl("get", *args, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None

    def cluster(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return sample_cluster.cluster_manifest(
            self.pve, self.public_key, name=name, namespace=self.namespace, **kwargs
        )

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get("k3sc", name) or {}
        return next(
            (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None
        )

    def wait_ready(self, name: str, timeout: float = 300.0) -> dict[str, Any]:
        return sample_cluster.wait_ready(
            self.kubeconfig, name, self.namespace, timeout=timeout, log=lambda line: print(line, flush=True)
        )

    def wait_condition(
        self, name: str, type_: str, status: str = "True", timeout: float = 120.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.condition(name, type_)
            if last and last.get("status") == status:
                return last
            time.sleep(0.5)
        raise AssertionError(
            f"{name}: {type_} never became {status}; last {last}; status {self.get('k3sc', name)}"
        )

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        items = (self.get("events") or {}).get("items", [])
        return [
            e
            for e in items
            if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == "K3sCluster"
            and (reason is None or e.get("reason") == reason)
        ]

    def kubeconfig_of(self, name: str) -> Path:
        secret = self.get("secret", f"{name}-kubeconfig")
        assert secret, f"no Secret {name}-kubeconfig"
        path = self.dir / f"{name}.kubeconfig"
        path.write_bytes(base64.b64decode(secret["data"]["value"]))
        return path

    def target_kubectl(self, name: str, *args: str) -> str:
        proc = self.kubectl(*args, kubeconfig=self.kubeconfig_of(name))
        return str(proc.stdout)

    def vms(self) -> dict[int, dict[str, Any]]:
        api = self.sim.api()
        return {vm["vmid"]: vm for vm in api.cluster.resources.get(type="vm")}

    def guest_clusters(self) -> dict[str, Any]:
        """The guests' own record of K3s clusters (one per --cluster-init or single server)."""
        state = self.sim.dir / "guests" / "k3s" / "state.json"
        data: dict[str, Any] = json.loads(state.read_text()) if state.exists() else {}
        return data

    async def ssh(self, host: str, command: str) -> str:
        key = asyncssh.import_private_key(self.private_key)
        async with asyncssh.connect(
            host, port=int(self.pve["guestSshPort"]), username="ubuntu", client_keys=[key], known_hosts=None
        ) as conn:
            result = await conn.run(command, check=True)
            return str(result.stdout)


@pytest.fixture
def lab_guests(pve_sim: Any) -> Iterator[dict[str, Any]]:
    """The guests process (subprocess, as in the lab) following this test's simulator."""
    proc = guests_component.spawn(pve_sim.dir)
    try:
        ready = guests_component.wait_ready(proc, pve_sim.dir)
        yield guests_component.publish(pve_sim.dir, ready)
    finally:
        processes.stop_group(proc)


@pytest.fixture
def lab(
    namespace: str,
    kubectl: Any,
    kubeconfig: Path,
    crds: str,
    pve_sim: Any,
    lab_guests: dict[str, Any],
    start_operator: Callable[..., Any],
    tmp_path: Path,
) -> Lab:
    private, public = sample_cluster.new_ssh_key()
    the_lab = Lab(
        namespace=namespace,
        kubectl=kubectl,
        kubeconfig=kubeconfig,
        pve=lab_guests,
        sim=pve_sim,
        private_key=private,
        public_key=public,
        dir=tmp_path,
        operator=None,
    )
    the_lab.apply(*sample_cluster.lab_secrets(lab_guests, namespace, private))
    the_lab.operator = start_operator(namespace)
    return the_lab
