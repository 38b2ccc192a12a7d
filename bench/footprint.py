"""Operator memory and CPU at idle with N ProxmoxVM objects, and what its resync costs Proxmox.

The simulator's inventory holds N stopped VMs; N ProxmoxVM objects adopt them (``powerState:
Stopped``, so no guest is needed). Once every object is Ready the operator process is left alone for
``--idle`` seconds (at least two resync intervals): its RSS (and peak RSS) and CPU time over that
window come from /proc; the simulator's call counts over the same window give the Proxmox calls of
a steady-state resync, per VM and per interval, as the real operator process makes them.

    python -m bench.footprint [--sizes 100,1000] [--idle 130] [--resync 60]
    python -m bench.footprint --sizes 10000 --idle 130 --resync 60     # issue 21: <= 400 MiB
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.rig import Rig, load_average, parse_sizes, rss_and_cpu, sample_inventory, table

FIRST_VMID = 2000


def inventory(n: int) -> dict[str, Any]:
    data = sample_inventory({"scale": 0.05})
    for i in range(n):
        vmid = FIRST_VMID + i
        data["vms"].append(
            {
                "vmid": vmid,
                "node": f"pve{1 + i % 3}",
                "status": "stopped",
                "config": {
                    "name": f"fp-{vmid}",
                    "tags": "fp;k3sdeploy-adoptable",  # an admin's consent to adoption
                    "cores": 1,
                    "memory": 512,
                    "net0": "virtio,bridge=vmbr0",
                    "scsi0": f"local-lvm:vm-{vmid}-disk-0,size=4G",
                },
            }
        )
    return data


def proxmoxvm(namespace: str, vmid: int) -> dict[str, Any]:
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {"name": f"fp-{vmid}", "namespace": namespace},
        "spec": {
            "credentialsRef": {"name": "proxmox-credentials"},
            "source": {"existing": {"vmid": vmid}},
            "powerState": "Stopped",
        },
    }


READY = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'


def count_ready(rig: Rig) -> int:
    """ProxmoxVMs whose Ready condition is True (only that field is fetched: at 10,000 objects the
    full list is tens of MiB per look)."""
    out = rig.kubectl("get", "pvm", "-n", rig.namespace, "-o", f"jsonpath={READY}", check=False, timeout=300)
    return sum(1 for line in out.splitlines() if line.strip() == "True")


def _at_least(rig: Rig, n: int) -> Callable[[], bool]:
    return lambda: count_ready(rig) >= n


def peak_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(sizes: list[int], idle: float, resync: float, log: Any = print) -> list[dict[str, Any]]:
    rig = Rig(inventory=inventory(max(sizes)), operator_env={"K3SD_RESYNC_SECONDS": str(resync)})
    rig.start(guests=False)
    results = []
    try:
        applied = 0
        for n in sizes:
            started = time.monotonic()
            for chunk in range(applied, n, 250):
                rig.apply(
                    *(proxmoxvm(rig.namespace, FIRST_VMID + i) for i in range(chunk, min(n, chunk + 250)))
                )
            applied = n
            rig.wait(_at_least(rig, n), 3600, f"{n} ProxmoxVMs Ready", interval=3 if n <= 1000 else 15)
            converge = time.monotonic() - started
            time.sleep(5)
            assert rig.operator is not None
            pid = rig.operator.pid
            rig.admin("POST", "counts/reset")
            _, cpu0 = rss_and_cpu(pid)
            t0 = time.monotonic()
            time.sleep(idle)
            rss, cpu1 = rss_and_cpu(pid)
            elapsed = time.monotonic() - t0
            calls = rig.admin("GET", "counts")
            intervals = elapsed / resync
            row = {
                "objects": n,
                "convergeSeconds": round(converge, 1),
                "rssMiB": round(rss, 1),
                "peakRssMiB": round(peak_rss(pid), 1),
                "idleCpuPercent": round(100 * (cpu1 - cpu0) / elapsed, 2),
                "idleSeconds": round(elapsed),
                "proxmoxCalls": calls["total"],
                "callsPerVmPerInterval": round(calls["total"] / (n * intervals), 4),
                "callsByEndpoint": calls["calls"],
                "load": load_average(),
            }
            log(f"  {row}")
            results.append(row)
    finally:
        rig.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--idle", type=float, default=130.0, help="seconds of idle measurement")
    parser.add_argument("--resync", type=float, default=60.0, help="operator resync interval (s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    results = run([int(s) for s in parse_sizes(args.sizes)], args.idle, args.resync)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    header = ["objects", "converge s", "RSS MiB", "peak RSS MiB", "idle CPU %", "Proxmox calls/VM/interval",
              "load avg"]  # fmt: skip
    rows = [[r["objects"], r["convergeSeconds"], r["rssMiB"], r["peakRssMiB"], r["idleCpuPercent"],
             r["callsPerVmPerInterval"], r["load"]] for r in results]  # fmt: skip
    print(table([header, *rows]))


if __name__ == "__main__":
    main()
