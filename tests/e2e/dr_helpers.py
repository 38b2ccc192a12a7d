"""What the status-wipe and management-move scenarios count, read from the world and not from the
operator: clones from the simulator's call counts, K3s installs from the guests' own log, addresses
from the children's specs and the VMs' configs in Proxmox, pins from the host-keys Secret."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .conftest import Lab

CLONE = "POST /nodes/{node}/qemu/{vmid}/clone"
FILE_READ = "GET /nodes/{node}/qemu/{vmid}/agent/file-read"
# what the K3s stand-in logs once an install or upgrade registered the node (control.py)
_INSTALLED = re.compile(r"k3s (server|agent) (\S+) \((\S+)\) (\S+) in cluster")


def installs(lab: Lab) -> Counter[tuple[str, str]]:
    """Completed K3s installs as the guests saw them, by (node, version)."""
    log = Path(lab.sim.dir) / "guests" / "guests.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return Counter((m.group(2), m.group(4)) for m in _INSTALLED.finditer(text))


def clones(lab: Lab) -> int:
    return int(lab.sim.counts().get(CLONE, 0))


@dataclass
class World:
    """The cluster as the world holds it, for before/after comparisons."""

    addresses: dict[str, str]  # member -> address in the child's spec
    configs: dict[str, str]  # member -> ipconfig0 of its VM in Proxmox
    vmids: dict[str, int]
    pins: dict[str, str]  # the host-keys Secret's data
    pins_version: str
    clones: int
    key_reads: int
    installs: Counter[tuple[str, str]]


def world(lab: Lab, name: str, kubectl: Any = None, namespace: str | None = None) -> World:
    """Read the world; ``kubectl``/``namespace`` default to the lab's management cluster."""
    run = kubectl or lab.kubectl
    ns = namespace or lab.namespace

    def get(*args: str) -> Any:
        proc = run("get", *args, "-n", ns, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None

    children = [
        c
        for c in (get("pvm") or {}).get("items", [])
        if (c["metadata"].get("labels") or {}).get("k3sdeploy.io/cluster") == name
    ]
    addresses = {
        c["metadata"]["name"]: str(((c["spec"].get("cloudInit") or {}).get("ipConfig") or {}).get("address"))
        for c in children
    }
    by_name = {vm.get("name"): vm for vm in lab.vms().values() if not vm.get("template")}
    api = lab.sim.api()
    configs, vmids = {}, {}
    for member in addresses:
        vm = by_name.get(member)
        if vm is not None:
            vmids[member] = int(vm["vmid"])
            configs[member] = str(api.nodes(vm["node"]).qemu(vm["vmid"]).config.get().get("ipconfig0"))
    pins = get("secret", f"{name}-host-keys") or {}
    return World(
        addresses=addresses,
        configs=configs,
        vmids=vmids,
        pins=dict(pins.get("data") or {}),
        pins_version=str((pins.get("metadata") or {}).get("resourceVersion")),
        clones=clones(lab),
        key_reads=int(lab.sim.counts().get(FILE_READ, 0)),
        installs=installs(lab),
    )


def wipe_statuses(lab: Lab, name: str, kubectl: Any = None, namespace: str | None = None) -> None:
    """Every K3sCluster and ProxmoxVM status of the namespace set to nothing (status subresource)."""
    run = kubectl or lab.kubectl
    ns = namespace or lab.namespace
    wipe = json.dumps({"status": None})
    pvms = json.loads(run("get", "pvm", "-n", ns, "-o", "json").stdout)["items"]
    for kind, obj in [("k3sc", name)] + [("pvm", p["metadata"]["name"]) for p in pvms]:
        run("patch", kind, obj, "-n", ns, "--subresource=status", "--type=merge", "-p", wipe)
    for kind, obj in [("k3sc", name)] + [("pvm", p["metadata"]["name"]) for p in pvms]:
        left = json.loads(run("get", kind, obj, "-n", ns, "-o", "json").stdout).get("status")
        assert not left, f"{kind}/{obj} still has a status: {left}"


def until(predicate: Any, timeout: float, what: str, interval: float = 0.2, explain: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    why = f": {explain()}" if explain else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{why}")


def explain(lab: Lab, name: str) -> str:
    """The cluster's conditions and the namespace's Warning Events, for a failure message."""
    status = (lab.get("k3sc", name) or {}).get("status") or {}
    conditions = [
        (c["type"], c["status"], c.get("reason"), c.get("message", "")[:300])
        for c in status.get("conditions") or []
    ]
    warnings = [
        (e["involvedObject"].get("name"), e.get("reason"), e.get("message", "")[:300])
        for e in (lab.get("events") or {}).get("items", [])
        if e.get("type") == "Warning"
    ]
    return f"phase {status.get('phase')}; conditions {conditions}; warnings {warnings[-8:]}"


def ready_since(lab: Lab, name: str, started: float, timeout: float, get: Any = None) -> float:
    """Seconds from ``started`` (monotonic) until the cluster is Ready at its generation."""

    def ok() -> bool:
        obj = (get or lab.get)("k3sc", name) or {}
        status = obj.get("status") or {}
        cond = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        current = status.get("observedGeneration") == obj.get("metadata", {}).get("generation")
        return bool(current and cond.get("status") == "True" and status.get("phase") == "Ready")

    until(ok, timeout, f"{name} Ready", interval=0.25, explain=None if get else lambda: explain(lab, name))
    return time.monotonic() - started


def same_place(before: World, after: World, members: list[str]) -> list[str]:
    """Every way a member that existed before moved: address, VM, Proxmox ipconfig, pin."""
    found = []
    for m in members:
        for what, a, b in (
            ("spec address", before.addresses.get(m), after.addresses.get(m)),
            ("vmid", before.vmids.get(m), after.vmids.get(m)),
            ("ipconfig0", before.configs.get(m), after.configs.get(m)),
        ):
            if a != b:
                found.append(f"{m}: {what} {a} -> {b}")
    for key, value in before.pins.items():
        if after.pins.get(key) != value:
            found.append(f"pin {key} changed")
    return found
