"""What provisioning N ProxmoxVMs at once costs: time, Proxmox calls, CPU and memory of the operator.

The run of issue 21 (this operator against a peer, same simulator inventory, template and node): 20 ms
per Proxmox call, a 20 s full clone, a 28 s boot (start task 3 s + 25 s until the guest agent
answers), N ProxmoxVMs of 4 cores / 4096 MiB applied in one ``kubectl apply``, all cloned from one
template onto one node. Each size gets a fresh lab (control plane, simulator, operator process), so
its CPU and memory are its own. Durations are divided by ``--factor`` for quick runs; the operator's
poll intervals are not, so call counts at factor 1 are the ones to compare with the issue.

Per size it prints: apply -> all Ready, the Proxmox calls until then (total, per VM, ``nextid``,
task-status reads, i.e. per-task status and per-node task lists), the calls per minute of an idle
window after settling, the operator's RSS at the end of that window, and its CPU seconds (from start
to convergence, and in total at the end). The machine may be shared: CPU seconds are a sturdier
figure than wall-clock times, which other processes stretch.

    python -m bench.provision_economy [--sizes 1,10,50,200] [--factor 1] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.footprint import count_ready
from bench.rig import Rig, load_average, parse_sizes, rss_and_cpu, sample_inventory, table

# Seconds before scaling (issue 21).
CLONE, START, BOOT = 20.0, 3.0, 25.0
LATENCY = 0.02  # per call, not scaled
TEMPLATE, NODE = "ubuntu-2404-cloud", "pve1"
NEXTID = "GET /cluster/nextid"
TASK_READS = ("GET /nodes/{node}/tasks/{upid}/status", "GET /nodes/{node}/tasks")


def inventory(factor: float) -> dict[str, Any]:
    return sample_inventory(
        {
            "scale": 1.0 / factor,
            "tasks": {"qmclone": CLONE, "qmstart": START},
            "bootDelay": BOOT,
            "resourcesStatusLag": 2.0,
        }
    )


def proxmoxvm(rig: Rig, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {"name": f"econ-{i:04d}", "namespace": rig.namespace},
        "spec": {
            "credentialsRef": {"name": "proxmox-credentials"},
            "source": {"clone": {"template": {"name": TEMPLATE}, "full": True, "storage": "local-lvm"}},
            "node": NODE,
            "resources": {"cores": 4, "memoryMiB": 4096},
            "cloudInit": {"user": "ubuntu", "sshAuthorizedKeys": [rig.public_key]},
            "powerState": "Running",
        },
    }


def _calls(counts: dict[str, Any], *keys: str) -> int:
    return sum(int(counts["calls"].get(k, 0)) for k in keys)


def measure(n: int, factor: float, idle: float, resync: float, timeout: float) -> dict[str, Any]:
    rig = Rig(inventory=inventory(factor), operator_env={"K3SD_RESYNC_SECONDS": str(resync)})
    rig.start(guests=False)
    try:
        assert rig.operator is not None
        pid = rig.operator.pid
        rig.admin("PUT", "faults", {"latency": LATENCY})
        time.sleep(2)  # the operator's start-up (imports, first watch) is not what is measured
        _, cpu_start = rss_and_cpu(pid)
        rig.admin("POST", "counts/reset")
        started = time.monotonic()
        for chunk in range(0, n, 250):
            rig.apply(*(proxmoxvm(rig, i) for i in range(chunk, min(n, chunk + 250))))
        rig.wait(lambda: count_ready(rig) >= n, timeout, f"{n} ProxmoxVMs Ready", interval=0.5)
        converged = time.monotonic() - started
        counts = rig.admin("GET", "counts")
        _, cpu_converged = rss_and_cpu(pid)
        time.sleep(10)  # settle: last status writes, the memory release after convergence
        rig.admin("POST", "counts/reset")
        t0 = time.monotonic()
        time.sleep(idle)
        idle_counts = rig.admin("GET", "counts")
        idle_minutes = (time.monotonic() - t0) / 60
        rss, cpu_end = rss_and_cpu(pid)
        return {
            "n": n,
            "factor": factor,
            "convergedSeconds": round(converged, 1),
            "calls": counts["total"],
            "callsPerVm": round(counts["total"] / n, 1),
            "nextidCalls": _calls(counts, NEXTID),
            "taskStatusCalls": _calls(counts, *TASK_READS),
            "idleCallsPerMin": round(idle_counts["total"] / idle_minutes, 1),
            "rssMiB": round(rss, 1),
            "cpuToConverge": round(cpu_converged - cpu_start, 2),
            "cpuTotal": round(cpu_end, 2),
            "callsByEndpoint": counts["calls"],
            "load": load_average(),
        }
    finally:
        rig.stop()


HEADER = ["N", "converged s", "calls", "calls/VM", "nextid", "task reads", "idle calls/min", "RSS MiB",
          "CPU s to converge", "CPU s total", "load avg"]  # fmt: skip


def rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r["n"], r["convergedSeconds"], r["calls"], r["callsPerVm"], r["nextidCalls"], r["taskStatusCalls"],
             r["idleCallsPerMin"], r["rssMiB"], r["cpuToConverge"], r["cpuTotal"], r["load"]]
            for r in results]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50,200")
    parser.add_argument("--factor", type=float, default=1.0, help="divide clone and boot durations by this")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle window after settling")
    parser.add_argument("--resync", type=float, default=60.0, help="operator resync interval (s)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    print(f"factor 1/{args.factor:g}: clone {CLONE / args.factor:g}s, start {START / args.factor:g}s, "
          f"agent {BOOT / args.factor:g}s later; {LATENCY * 1000:g} ms per call")  # fmt: skip
    results = []
    for n in (int(s) for s in parse_sizes(args.sizes)):
        row = measure(n, args.factor, args.idle, args.resync, args.timeout)
        print(f"  {row}", flush=True)
        results.append(row)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(table([HEADER, *rows(results)]))


if __name__ == "__main__":
    main()
