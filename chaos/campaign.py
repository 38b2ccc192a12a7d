"""Seeded fault campaigns against the e2e scenario: create a K3sCluster, let it become Ready, delete it.

Each run applies a cluster, injects one kind of fault while it converges (and while it is deleted),
then checks the outcome from the outside:

- converged: one read of the cluster shows Ready=True and every node ready within the timeout, and
  the status never contradicts itself afterwards (Ready=True with a node not ready);
- duplicate VMs: two VMs in Proxmox for one node name;
- leaked VMs: a VM created during the run that no ProxmoxVM owns while the cluster lives, or that is
  still there after the cluster was deleted;
- Secrets lost: ``<cluster>-kubeconfig`` / ``<cluster>-token`` missing, the token's password changed
  after it was first written, the kubeconfig not answering, or the user's Secrets gone.

Kinds: ``kill`` (SIGKILL the operator at random points, restart it), ``proxmox`` (5xx, 595, timeouts,
lost replies, failed tasks and locks on >= 10% of calls, through the simulator's faults), ``ssh``
(sessions dropped mid-command by the guests), ``apiserver`` (restart the management etcd +
kube-apiserver). Every random choice comes from ``--seed``, so a campaign replays the same schedule
(timing of the system itself still varies).

    python -m chaos.campaign --kind kill --runs 5 --seed 1 [--servers 1 --agents 1]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from bench.rig import Rig, load_average, sample_inventory

from k3s_deploy.services.k3scluster import tokens

KINDS = ("kill", "proxmox", "ssh", "apiserver")
TIMING = {"scale": 0.05, "resourcesStatusLag": 2.0}  # clone 1 s, guest agent 1.25 s after start
INSTALL_SECONDS = 1.0
INJECTED_STATUSES = ("500", "595", "504", "503")


@dataclass
class RunResult:
    run: int
    converged: bool = False
    seconds: float = 0.0
    faults: int = 0
    calls: int = 0  # Proxmox API calls during the run (proxmox kind only)
    duplicates: int = 0
    leaked: int = 0
    secrets_lost: int = 0
    deleted: bool = False
    notes: list[str] = field(default_factory=list)
    leaked_vmids: set[int] = field(default_factory=set)


def public(result: RunResult) -> dict[str, Any]:
    return {**asdict(result), "leaked_vmids": sorted(result.leaked_vmids)}


class Injector:
    """Runs one kind of fault on a background thread until stopped; counts what it injected."""

    def __init__(self, rig: Rig, kind: str, rng: random.Random, window: float, cluster: str) -> None:
        self.rig, self.kind, self.rng, self.window, self.cluster = rig, kind, rng, window, cluster
        self.stop_event = threading.Event()
        self.injected = 0
        self.locks_refused = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._guard, daemon=True)

    def start(self) -> Injector:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=120)

    def _guard(self) -> None:
        try:
            getattr(self, f"_{self.kind}")()
        except Exception as exc:  # a broken injector must show in the report, not pass silently
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _at_random_times(self, count: int, action: Callable[[], None]) -> None:
        times = sorted(self.rng.uniform(0.3, self.window) for _ in range(count))
        started = time.monotonic()
        for at in times:
            if self.stop_event.wait(max(0.0, at - (time.monotonic() - started))):
                return
            action()
            self.injected += 1

    def _kill(self) -> None:
        def kill_and_restart() -> None:
            self.rig.kill_operator()
            time.sleep(self.rng.uniform(0.0, 1.0))
            self.rig.on_spawner(self.rig.start_operator)

        self._at_random_times(4, kill_and_restart)

    def _apiserver(self) -> None:
        def restart() -> None:
            self.rig.on_spawner(self.rig.restart_apiserver)

        self._at_random_times(2, restart)

    def _ssh(self) -> None:
        self.rig.chaos({"sshDrop": {"rate": 0.35, "seed": self.rng.randrange(1 << 30), "minDelay": 0.0,
                                    "maxDelay": 1.5, "match": ""}})  # fmt: skip
        self.stop_event.wait()
        self.injected = int(self.rig.chaos({"sshDrop": {"rate": 0.0}})["drops"])

    def _proxmox(self) -> None:
        self.rig.admin("POST", "counts/reset")
        self.rig.admin("PUT", "faults", proxmox_faults(self.rng.randrange(1 << 30)))
        locks = 0
        deadline = time.monotonic() + self.window
        while not self.stop_event.wait(self.rng.uniform(1.0, 4.0)):
            mine = [vm for vm in self.rig.vms() if str(vm.get("name", "")).startswith(f"{self.cluster}-")]
            if mine and time.monotonic() < deadline:
                vm = self.rng.choice(mine)
                try:
                    self.rig.admin("POST", f"vms/{vm['vmid']}/lock", {"lock": "backup", "seconds": 3})
                    locks += 1
                except requests.HTTPError as exc:  # 409: already locked (a clone), as vzdump would fail
                    if exc.response is None or exc.response.status_code != 409:
                        raise
                    self.locks_refused += 1
        faults = self.rig.admin("GET", "faults")
        self.rig.admin("POST", "faults/reset")
        counts = self.rig.admin("GET", "counts")
        errors = sum(v for k, v in counts["statuses"].items() if k.rsplit(" ", 1)[1] in INJECTED_STATUSES)
        task_failures = sum(1 - r["remaining"] for r in faults["taskFailures"])
        self.injected = errors + task_failures + locks
        self.total_calls = int(counts["total"])


def proxmox_faults(seed: int) -> dict[str, Any]:
    """Errors on ~12% of all calls plus lost clone replies, two failed tasks; seeded."""
    return {
        "seed": seed,
        "errors": [
            {"match": "POST /nodes/{node}/qemu/{vmid}/clone", "rate": 0.3, "status": 504,
             "message": "lost reply (simulated)", "apply": True},
            {"match": "*", "rate": 0.05, "status": 500, "message": "simulated internal error"},
            {"match": "*", "rate": 0.03, "status": 503, "message": "simulated: service unavailable"},
            {"match": "*", "rate": 0.03, "status": 595, "message": "No route to host (simulated)"},
            {"match": "*", "rate": 0.015, "status": 504, "message": "simulated timeout", "delay": 4.0},
        ],
        "taskFailures": [
            {"type": "qmclone", "message": "clone failed: simulated", "remaining": 1},
            {"type": "qmstart", "message": "start failed: simulated", "remaining": 1},
        ],
    }  # fmt: skip


def secret_values(rig: Rig, name: str) -> dict[str, str]:
    """Each Secret's data; for ``<cluster>-token`` its identity: the server password and the stable
    cluster id, neither of which may ever change once written (the token itself turns into K3s's secure
    form ``K10<ca hash>::server:<password>`` once, when the first server has written it; the id is
    written before the token, so a first look may see only the id)."""
    out = {}
    for secret in (f"{name}-kubeconfig", f"{name}-token", "proxmox-credentials", "k3s-ssh-key"):
        obj = rig.get("secret", secret)
        if obj:
            data = obj.get("data") or {}
            if secret == f"{name}-token":
                identity = {k: data[k] for k in ("clusterId",) if k in data}
                if "token" in data:
                    identity["password"] = tokens.password_of(base64.b64decode(data["token"]).decode())
                data = identity
            out[secret] = json.dumps(data, sort_keys=True)
    return out


def check_cluster(rig: Rig, name: str, initial_vmids: set[int], result: RunResult, expected: int) -> None:
    vms = [vm for vm in rig.vms() if vm["vmid"] not in initial_vmids]
    by_name = Counter(str(vm.get("name")) for vm in vms)
    result.duplicates = sum(n - 1 for n in by_name.values() if n > 1)
    owned = {
        int(p["status"]["vmid"]) for p in rig.items("pvm") if (p.get("status") or {}).get("vmid") is not None
    }
    leaked = [vm["vmid"] for vm in vms if vm["vmid"] not in owned]
    result.leaked_vmids.update(leaked)
    result.leaked = len(result.leaked_vmids)
    if leaked or result.duplicates:
        result.notes.append(f"VMs {sorted(by_name.items())}; owned {sorted(owned)}; leaked {leaked}")
    status = (rig.get("k3sc", name) or {}).get("status") or {}
    ready_nodes = sum(1 for n in status.get("nodes") or [] if n.get("ready"))
    if ready_nodes != expected:
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        said = f"Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})"
        result.notes.append(f"at the check: {ready_nodes}/{expected} nodes ready, {said}")
        if ready.get("status") == "True":  # one status read that contradicts itself
            result.converged = False


def all_ready(obj: dict[str, Any] | None, expected: int) -> bool:
    """Ready=True and every node ready, in one read of the object (not two moments)."""
    status = (obj or {}).get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return ready and sum(1 for n in status.get("nodes") or [] if n.get("ready")) == expected


def check_secrets(rig: Rig, name: str, first: dict[str, str], result: RunResult) -> None:
    now = secret_values(rig, name)
    for key in (f"{name}-kubeconfig", f"{name}-token", "proxmox-credentials", "k3s-ssh-key"):
        if key not in now:
            result.secrets_lost += 1
            result.notes.append(f"Secret {key} missing")
    was = json.loads(first.get(f"{name}-token") or "{}")
    is_now = json.loads(now.get(f"{name}-token") or "{}")
    if any(is_now.get(key) != value for key, value in was.items()):  # a part of it written, then changed
        result.secrets_lost += 1
        result.notes.append("the cluster token changed")
    kubeconfig = rig.get("secret", f"{name}-kubeconfig")
    if kubeconfig:
        path = rig.dir / f"{name}.kubeconfig"
        path.write_bytes(base64.b64decode(kubeconfig["data"]["value"]))
        out = rig.kubectl("--kubeconfig", str(path), "get", "nodes", "-o", "name", check=False)
        if "node/" not in out:
            result.secrets_lost += 1
            result.notes.append("the kubeconfig Secret does not reach the cluster")


def one_run(rig: Rig, kind: str, run: int, seed: int, args: argparse.Namespace) -> RunResult:
    rng = random.Random(seed * 1000 + run)
    name = f"{kind}{run}"
    result = RunResult(run)
    initial = {int(vm["vmid"]) for vm in rig.vms()}
    expected = args.servers + args.agents
    first_secrets: dict[str, str] = {}
    started = time.monotonic()
    rig.apply(rig.cluster(name, args.servers, args.agents))
    injector = Injector(rig, kind, rng, args.window, name).start()
    lasting = kind in ("ssh", "proxmox")  # these stay on through the deletion too

    def ready() -> bool:
        if not first_secrets.get(f"{name}-token"):
            first_secrets.update(secret_values(rig, name))
        return all_ready(rig.get("k3sc", name), expected) and (lasting or not injector.thread.is_alive())

    try:
        rig.wait(ready, args.timeout, f"{name} Ready", interval=0.5)
        result.converged = True
        result.seconds = round(time.monotonic() - started, 1)
    except TimeoutError as exc:
        result.notes.append(str(exc))
    if not lasting:
        injector.stop()
    if rig.operator is None or rig.operator.poll() is not None:
        rig.start_operator()
    check_cluster(rig, name, initial, result, expected)
    if result.duplicates or result.leaked or not result.converged:  # keep the story of what went wrong
        events = rig.kubectl("get", "events", "-n", rig.namespace, "--sort-by=.lastTimestamp", check=False)
        result.notes += [" ".join(line.split()) for line in events.splitlines() if f"{name}-" in line][:60]
    check_secrets(rig, name, first_secrets, result)
    # delete and check nothing is left behind
    rig.kubectl("delete", "k3sc", name, "-n", rig.namespace, "--wait=false")
    try:
        rig.wait(lambda: rig.get("k3sc", name) is None, args.timeout, f"{name} deleted", interval=1.0)
        result.deleted = True
    except TimeoutError as exc:
        result.notes.append(str(exc))
    if lasting:
        injector.stop()
    result.faults = injector.injected
    result.notes += injector.errors
    if kind == "proxmox":
        result.calls = int(getattr(injector, "total_calls", 0))
        result.notes.append(
            f"{injector.injected} faults in {result.calls} calls; "
            f"{injector.locks_refused} backup locks refused (VM already locked)"
        )
    left = [vm["vmid"] for vm in rig.vms() if vm["vmid"] not in initial]
    if left:
        result.leaked_vmids.update(left)
        result.leaked = len(result.leaked_vmids)
        result.notes.append(f"VMs left after delete: {left}")
    return result


def campaign(kind: str, runs: int, seed: int, args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    env = {"K3SD_RESYNC_SECONDS": "5", "K3SD_PROXMOX_TIMEOUT_SECONDS": "3"}
    rig = Rig(inventory=sample_inventory(TIMING), operator_env=env).start()
    results: list[RunResult] = []
    try:
        rig.chaos({"installSeconds": INSTALL_SECONDS})
        for run in range(runs):
            result = one_run(rig, kind, run, seed, args)
            log(f"  run {run}: {public(result)}")
            results.append(result)
    finally:
        rig.stop()
    return {
        "kind": kind,
        "seed": seed,
        "runs": len(results),
        "faultsInjected": sum(r.faults for r in results),
        "proxmoxCalls": sum(r.calls for r in results),
        "converged": sum(1 for r in results if r.converged and r.deleted),
        "duplicateVMs": sum(r.duplicates for r in results),
        "leakedVMs": sum(r.leaked for r in results),
        "secretsLost": sum(r.secrets_lost for r in results),
        "meanSecondsToReady": round(sum(r.seconds for r in results) / max(1, len(results)), 1),
        "load": load_average(),
        "failures": [
            public(r)
            for r in results
            if not (r.converged and r.deleted) or r.duplicates or r.leaked or r.secrets_lost
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=[*KINDS, "all"], default="all")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--window", type=float, default=20.0, help="seconds over which faults are spread")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    summaries = []
    for kind in KINDS if args.kind == "all" else (args.kind,):
        print(f"campaign {kind}: {args.runs} runs, seed {args.seed}, {args.servers}+{args.agents} nodes")
        summary = campaign(kind, args.runs, args.seed, args)
        print(json.dumps(summary, indent=1))
        summaries.append(summary)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1))
    bad = [s for s in summaries if s["converged"] != s["runs"] or s["duplicateVMs"] or s["leakedVMs"]
           or s["secretsLost"]]  # fmt: skip
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
