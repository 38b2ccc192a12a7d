"""Many clusters at once: N single-server K3sClusters applied together, against one cluster alone.

Same scaled timings as bench/convergence.py. First one cluster alone (apply -> Ready), then N applied
in one kubectl call; reports when the first, the median and the last became Ready, and the last one's
time as a multiple of the lone cluster's. Every lab K3s server runs its own etcd + kube-apiserver
(~330 MiB), so N = 20 needs ~7 GiB and loads the CPU: the load average is printed with the figures.

    python -m bench.throughput [--clusters 20] [--factor 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.convergence import critical_path, scaled_rig
from bench.rig import Rig, load_average


def ready_names(rig: Rig) -> set[str]:
    return {
        obj["metadata"]["name"]
        for obj in rig.items("k3sc")
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )
    }


def run(clusters: int, factor: float, timeout: float, log: Any = print) -> dict[str, Any]:
    rig = scaled_rig(factor)
    try:
        started = time.monotonic()
        rig.apply(rig.cluster("alone", 1, 0))
        rig.wait(lambda: rig.ready("k3sc", "alone"), timeout, "the lone cluster Ready", interval=0.25)
        alone = time.monotonic() - started
        log(f"  one cluster alone: {alone:.1f}s (load {load_average()})")
        rig.kubectl("delete", "k3sc", "alone", "-n", rig.namespace, "--timeout=300s", timeout=320)

        names = [f"tp{i:02d}" for i in range(clusters)]
        done: dict[str, float] = {}
        started = time.monotonic()
        rig.apply(*(rig.cluster(name, 1, 0) for name in names))

        def all_ready() -> bool:
            now = round(time.monotonic() - started, 1)
            for name in ready_names(rig) - done.keys():
                done[name] = now
            return len(done) == clusters

        rig.wait(all_ready, timeout, f"{clusters} clusters Ready", interval=1.0)
        times = sorted(done.values())
        result = {
            "clusters": clusters,
            "factor": factor,
            "criticalPath": round(critical_path(factor, 1, 0), 1),
            "aloneSeconds": round(alone, 1),
            "firstSeconds": times[0],
            "medianSeconds": round(statistics.median(times), 1),
            "lastSeconds": times[-1],
            "lastVsAlone": round(times[-1] / alone, 2),
            "load": load_average(),
        }
        log(f"  {result}")
        rig.kubectl("delete", "k3sc", "--all", "-n", rig.namespace, "--timeout=600s", timeout=620)
        return result
    finally:
        rig.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args()
    r = run(args.clusters, args.factor, args.timeout)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    print(
        f"{r['clusters']} single-server clusters at once (factor 1/{r['factor']:g}, critical path "
        f"{r['criticalPath']}s): one alone {r['aloneSeconds']}s; all {r['clusters']}: first {r['firstSeconds']}s, "
        f"median {r['medianSeconds']}s, last {r['lastSeconds']}s = {r['lastVsAlone']}x alone (load {r['load']})"
    )


if __name__ == "__main__":
    main()
