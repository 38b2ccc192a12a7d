"""Apply -> Ready for K3sClusters of several sizes, against the critical path and the old CLI's way.

Realistic step durations (clone 20 s, boot 30 s = start task 3 s + 27 s, guest agent 10 s more,
K3s install 40 s) are divided by ``--factor`` and set in the simulator's timing and the guests'
install duration. The critical path of a cluster is the longest chain that must run one step after
another even with unlimited parallelism: clone -> configure -> start -> boot + agent -> install the
first server -> the other servers' joins one at a time (etcd takes one new member at a time), the agents
joining beside them. The baseline is the old CLI, which did every
step of every node one node at a time: the sum of all nodes' chains (computed from the same timings).

    python -m bench.convergence [--factor 4] [--sizes 1+0,3+2,3+10]
    python -m bench.convergence --baseline [--factor 4] [--sizes ...]

``--baseline`` runs that one-at-a-time way instead of computing it (see :mod:`bench.baseline`): the
same lab and timings, each VM through its ProxmoxVM to Ready one after the other, then K3s installed
node by node over SSH with the operator's own install planning, scripts and SSH adapter, until every
Node is Ready. It prints the measured and the computed baseline side by side.

Run from the repository root. Prints one row per size with the load average at the end of the run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.rig import Rig, load_average, parse_sizes, sample_inventory, table

# Seconds before scaling.
CLONE, START, BOOT_REST, AGENT, INSTALL = 20.0, 3.0, 27.0, 10.0, 40.0
CONFIG = 0.3  # the simulator's qmconfig task


def timing(factor: float) -> dict[str, Any]:
    return {
        "scale": 1.0 / factor,
        "tasks": {"qmclone": CLONE, "qmstart": START, "qmconfig": CONFIG},
        "bootDelay": BOOT_REST + AGENT,  # after the start task: OS boot, then the guest agent
        "resourcesStatusLag": 2.0,
    }


def scaled_rig(factor: float) -> Rig:
    """A started rig whose Proxmox and K3s installs take the realistic durations divided by ``factor``."""
    rig = Rig(inventory=sample_inventory(timing(factor))).start()
    try:
        rig.chaos({"installSeconds": INSTALL / factor})
    except BaseException:
        rig.stop()
        raise
    return rig


def chain(factor: float, installs: int) -> float:
    """One node's chain from nothing to K3s running (``installs`` installs one after another)."""
    return (CLONE + CONFIG + START + BOOT_REST + AGENT + installs * INSTALL) / factor


def critical_path(factor: float, servers: int, agents: int) -> float:
    """The shortest possible apply -> Ready: VMs in parallel, the first server, then the other servers
    one at a time (etcd admits one learner member at a time, so K3s servers join one by one) while the
    agents join in parallel with them (an agent needs only one server)."""
    joins = max(servers - 1, 1 if agents else 0)
    return chain(factor, 1) + joins * INSTALL / factor


def as_designed(factor: float, servers: int, agents: int) -> float:
    """The same when agents wait for every server, as the K3sCluster controller does."""
    return chain(factor, 1) + (servers - 1 + (1 if agents else 0)) * INSTALL / factor


def baseline(factor: float, servers: int, agents: int) -> float:
    return (servers + agents) * chain(factor, 1)


PHASES = ("VMsReady", "ServersReady", "Ready")


def measure(
    rig: Rig, name: str, servers: int, agents: int, timeout: float, nodes: dict[str, list[str]] | None = None
) -> dict[str, float]:
    """Seconds from apply until each of the cluster's PHASES conditions first became True. ``nodes``,
    when given, receives each node's states as ``status.nodes`` reported them ("Installing@21.3"): where
    the K3s stage's time goes (seen by the same 0.25 s reads, so up to 0.25 s late plus the read)."""
    started = time.monotonic()
    rig.apply(rig.cluster(name, servers, agents))
    seen: dict[str, float] = {}

    def progressed() -> bool:
        obj = rig.get("k3sc", name) or {}
        now = round(time.monotonic() - started, 1)
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") in PHASES and c.get("status") == "True":
                seen.setdefault(c["type"], now)
        for node in (obj.get("status") or {}).get("nodes") or []:
            if nodes is None:
                break
            states = nodes.setdefault(node.get("name", "?"), [])
            state = str(node.get("state"))
            if not states or not states[-1].startswith(state + "@"):
                states.append(f"{state}@{now}")
        return "Ready" in seen

    rig.wait(progressed, timeout, f"K3sCluster {name} Ready", interval=0.25)
    return seen


def run(
    factor: float, sizes: list[tuple[int, int]], timeout: float, log: Any = print
) -> list[dict[str, Any]]:
    results = []
    rig = scaled_rig(factor)
    try:
        for i, (servers, agents) in enumerate(sizes):
            name = f"conv{i}"
            nodes: dict[str, list[str]] = {}
            phases = measure(rig, name, servers, agents, timeout, nodes)
            seconds = phases["Ready"]
            path = critical_path(factor, servers, agents)
            row: dict[str, Any] = {
                "nodes": f"{servers}+{agents}",
                "seconds": round(seconds, 1),
                "criticalPath": round(path, 1),
                "ratio": round(seconds / path, 2),
                "agentsAfterServersPath": round(as_designed(factor, servers, agents), 1),
                "baseline": round(baseline(factor, servers, agents), 1),
                "load": load_average(),
                "phases": phases,
                "nodeStates": nodes,
            }
            row["speedup"] = round(baseline(factor, servers, agents) / seconds, 1)
            log(f"  {row}")
            results.append(row)
            rig.kubectl("delete", "k3sc", name, "-n", rig.namespace, "--timeout=300s", timeout=320)
    finally:
        rig.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=4.0, help="divide the realistic durations by this")
    parser.add_argument("--sizes", default="1+0,3+2,3+10", help="servers+agents, comma separated")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument(
        "--baseline", action="store_true", help="run the old CLI's one-node-at-a-time way instead"
    )
    args = parser.parse_args()
    sizes = [(int(s.split("+")[0]), int(s.split("+")[1])) for s in parse_sizes(args.sizes)]
    print(f"time factor 1/{args.factor:g}: clone {CLONE / args.factor:g}s, start+boot+agent "
          f"{(START + BOOT_REST + AGENT) / args.factor:g}s, install {INSTALL / args.factor:g}s")  # fmt: skip
    if args.baseline:
        from bench import baseline as one_at_a_time

        measured = one_at_a_time.run(args.factor, sizes, args.timeout, computed=baseline)
        if args.json:
            args.json.write_text(json.dumps({"factor": args.factor, "baseline": measured}, indent=1))
        print(one_at_a_time.report(measured))
        return
    results = run(args.factor, sizes, args.timeout)
    if args.json:
        args.json.write_text(json.dumps({"factor": args.factor, "results": results}, indent=1))
    vms = (CLONE + CONFIG + START + BOOT_REST + AGENT) / args.factor
    print(f"VMs alone (clone..agent) take {vms:.1f}s on the critical path")
    header = ["nodes", "apply->Ready s", "critical path s", "ratio", "path if agents after servers s",
              "one-at-a-time s", "speedup", "VMsReady s", "ServersReady s", "load avg"]  # fmt: skip
    rows = [[r["nodes"], r["seconds"], r["criticalPath"], r["ratio"], r["agentsAfterServersPath"], r["baseline"],
             r["speedup"],
             r["phases"].get("VMsReady", "-"), r["phases"].get("ServersReady", "-"), r["load"]]
            for r in results]  # fmt: skip
    print(table([header, *rows]))


if __name__ == "__main__":
    main()
