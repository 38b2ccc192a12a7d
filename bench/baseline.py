"""The old CLI's way, run for real: one node at a time, every step of it (``convergence --baseline``).

k3s-deploy-cli brought a cluster up node after node. This drives the same lab that way, with the
operator's own parts wherever the CLI had its own, so the only difference to a K3sCluster is the
order of the work:

- each VM is a ProxmoxVM (the child manifest a K3sCluster would make, without the owner), handled by
  the operator's ProxmoxVM controller; the next one is created only once the previous one is Ready
  with an address;
- then K3s goes on the nodes one after the other over SSH, in the K3sCluster controller's install
  order (the first server with ``--cluster-init``, the other servers, then the agents), with its
  install scripts, its join token and its asyncssh adapter;
- the clock stops when every Node is Ready in the new cluster's own API (what Ready means for a
  K3sCluster).
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.convergence import scaled_rig
from bench.rig import Rig, load_average, table
from k3s_deploy.adapters.ssh import AsyncSshRunner
from k3s_deploy.adapters.target_cluster import KubernetesTargetCluster
from k3s_deploy.api.k3scluster import K3sCluster
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy.services.k3scluster import install, nodes
from k3s_deploy.services.k3scluster.desired import desired
from k3s_deploy.services.k3scluster.kubeconfig import sanitise, server_url
from k3s_deploy.services.k3scluster.topology import ClusterRef

Member = tuple[str, str, dict[str, Any]]  # name, role, ProxmoxVM manifest


def members(rig: Rig, name: str, servers: int, agents: int) -> tuple[K3sCluster, list[Member]]:
    """The cluster as a K3sCluster would describe it, and the ProxmoxVMs it would create (no owner)."""
    manifest = rig.cluster(name, servers, agents)
    uid = str(uuid.uuid4())
    model = K3sCluster.model_validate({**manifest, "metadata": {**manifest["metadata"], "uid": uid}})
    want = desired(ClusterRef(name, rig.namespace, uid), model.spec, allocations={})
    out: list[Member] = []
    for member in want.members:
        body = copy.deepcopy(want.manifests[member.name])
        body["metadata"].pop("ownerReferences", None)
        out.append((member.name, member.role, body))
    return model, out


def vm_address(rig: Rig, name: str) -> str | None:
    """The VM's first address once its ProxmoxVM is Ready."""
    status = (rig.get("pvm", name) or {}).get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    addresses = status.get("addresses") or []
    return str(addresses[0]) if ready and addresses else None


def settings_of(model: K3sCluster) -> install.K3sSettings:
    k3s = model.spec.k3s
    script = k3s.install_source.script if k3s.install_source else None
    source = install.InstallSource(script_url=script.url) if script else install.InstallSource()
    return install.K3sSettings(version=k3s.version, source=source)


async def install_one_by_one(
    model: K3sCluster, roles: dict[str, str], ips: dict[str, str], private_key: str, limit: float
) -> None:
    """K3s on every node, one node at a time, then wait until every Node is Ready."""
    settings = settings_of(model)
    facts = [install.NodeFacts(n, "server" if r == "server" else "agent", ips[n]) for n, r in roles.items()]
    plan = install.plan(facts, settings, init_server=None)
    token = install.new_token()
    sans = install.tls_sans(settings, [ips[n] for n, r in roles.items() if r == "server"])
    ssh, spec = AsyncSshRunner(), model.spec.ssh

    def target(node: str) -> SshTarget:
        return SshTarget(host=ips[node], port=spec.port, user=spec.user, private_key=private_key)

    for step in (*plan.first, *plan.server_joins, *plan.agents):
        script = install.render_script(step, settings, token=token, node_ip=ips[step.node], sans=sans)
        await nodes.run_install(ssh, step.node, target(step.node), script, timeout_s=limit)
    assert plan.init_server is not None
    raw = await nodes.fetch_kubeconfig(ssh, plan.init_server, target(plan.init_server))
    kubeconfig = sanitise(raw).build(
        server=server_url(ips[plan.init_server]), name=str(model.metadata["name"])
    )
    cluster = KubernetesTargetCluster()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            ready = {n.name for n in await cluster.nodes(kubeconfig) if n.ready}
        except Exception:  # the API may still be coming up
            ready = set()
        if ready >= set(roles):
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"Nodes not Ready within {limit:.0f}s")


def measure(rig: Rig, name: str, servers: int, agents: int, timeout: float) -> dict[str, Any]:
    model, wanted = members(rig, name, servers, agents)
    started = time.monotonic()
    ips: dict[str, str] = {}
    vm_seconds: list[float] = []
    for member, _role, body in wanted:
        since = time.monotonic()
        rig.apply(body)
        found: dict[str, str] = {}

        def ready(member: str = member, found: dict[str, str] = found) -> bool:
            address = vm_address(rig, member)
            if address:
                found["ip"] = address
            return address is not None

        rig.wait(ready, timeout, f"ProxmoxVM {member} Ready", interval=0.25)
        ips[member] = found["ip"]
        vm_seconds.append(round(time.monotonic() - since, 1))
    vms_done = time.monotonic() - started
    roles = {member: role for member, role, _ in wanted}
    asyncio.run(install_one_by_one(model, roles, ips, rig.private_key, timeout))
    seconds = time.monotonic() - started
    return {
        "seconds": round(seconds, 1),
        "vmsSeconds": round(vms_done, 1),
        "installSeconds": round(seconds - vms_done, 1),
        "perVm": vm_seconds,
    }


def run(
    factor: float,
    sizes: list[tuple[int, int]],
    timeout: float,
    *,
    computed: Callable[[float, int, int], float],
    log: Any = print,
) -> list[dict[str, Any]]:
    results = []
    rig = scaled_rig(factor)
    try:
        for i, (servers, agents) in enumerate(sizes):
            name = f"base{i}"
            row: dict[str, Any] = {
                "nodes": f"{servers}+{agents}",
                **measure(rig, name, servers, agents, timeout),
            }
            row["computed"] = round(computed(factor, servers, agents), 1)
            row["measuredOverComputed"] = round(row["seconds"] / row["computed"], 2)
            row["load"] = load_average()
            log(f"  {row}")
            results.append(row)
            names = [f"{name}-server-{j}" for j in range(servers)] + [
                f"{name}-agent-{j}" for j in range(agents)
            ]
            rig.kubectl("delete", "pvm", *names, "-n", rig.namespace, "--timeout=300s", timeout=320)
    finally:
        rig.stop()
    return results


def report(results: list[dict[str, Any]]) -> str:
    header = ["nodes", "one-at-a-time measured s", "computed s", "measured/computed", "VMs s", "installs s",
              "load avg"]  # fmt: skip
    rows = [[r["nodes"], r["seconds"], r["computed"], r["measuredOverComputed"], r["vmsSeconds"],
             r["installSeconds"], r["load"]] for r in results]  # fmt: skip
    return table([header, *rows])
