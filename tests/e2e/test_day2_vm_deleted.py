"""Drift end to end: a member's VM destroyed in Proxmox behind the operator's back (``qm stop`` then
``qm destroy``, through the simulator's API as a user would), first an agent, then a server that did
not initialise the cluster. What a user expects: the loss is reported on the K3sCluster naming the
node and the VM, the ProxmoxVM clones a new VM, the stale Node is deleted (real K3s refuses a node
rejoining under a registered name with a new node password), the node rejoins on the new machine, the
cluster is Ready again and its kubeconfig Secret is untouched.

The fixture and helpers are those of ``test_day2.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from e2e.test_day2 import Lab, condition, node_ready
from e2e.test_day2 import lab as lab  # the fixture (re-exported for this module)

pytestmark = pytest.mark.e2e


def _destroy(pve_sim: Any, pve_node: str, vmid: int) -> None:
    """``qm stop`` + ``qm destroy``; the ProxmoxVM may start it again in between, so try again."""
    vm = pve_sim.api().nodes(pve_node).qemu(vmid)
    for _ in range(20):
        pve_sim.wait_task(vm.status.stop.post())
        status = pve_sim.wait_task(vm.delete())
        if status.get("exitstatus") == "OK":
            return
    raise AssertionError(f"could not destroy VM {vmid}: {status}")


async def _vms_named(pve_sim: Any, name: str) -> list[dict[str, Any]]:
    resources = await asyncio.to_thread(lambda: pve_sim.api().cluster.resources.get(type="vm"))
    return [vm for vm in resources if vm.get("name") == name and not vm.get("template")]


async def _replace_behind_the_back(lab: Lab, pve_sim: Any, cluster: str, member: str) -> None:
    before = await lab.cluster(cluster)
    entry = next(n for n in before["status"]["nodes"] if n["name"] == member)
    old_vmid, old_key, old_ip = entry["vmid"], entry["hostKeyFingerprint"], entry["ip"]
    old_node = (await lab.nodes(cluster))[member]
    secret = await lab.get("secret", f"{cluster}-kubeconfig")
    init_server = before["status"]["initServer"]

    # every state the K3sCluster goes through while it repairs (the loss must be visible there)
    seen: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def follow() -> None:
        while not done.is_set():
            obj = await lab.cluster(cluster)
            seen.append({c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []})
            await asyncio.sleep(0.3)

    follower = asyncio.create_task(follow())
    await asyncio.to_thread(_destroy, pve_sim, entry["pveNode"], old_vmid)

    last: dict[str, Any] = {}

    async def repaired() -> dict[str, Any] | None:
        obj = last["cluster"] = await lab.cluster(cluster)
        st = obj.get("status") or {}
        now = next((n for n in st.get("nodes") or [] if n["name"] == member), {})
        if now.get("vmid") in (None, old_vmid) or not now.get("ready"):
            return None
        if condition(obj, "Ready").get("status") != "True":
            return None
        return obj if condition(obj, "NodesInSync").get("status") == "True" else None

    try:
        healed = await lab.wait(repaired, f"{member} back on a new VM and {cluster} Ready", within=240)
    except AssertionError as exc:
        pvm = await lab.get("pvm", member)
        raise AssertionError(
            f"{exc}\ncluster status: {last.get('cluster', {}).get('status')}\n"
            f"ProxmoxVM status: {(pvm or {}).get('status')}"
        ) from None
    finally:
        done.set()
        await follower

    # reported while it was gone: not Ready, NodesInSync False naming the node; an Event naming the VM
    assert any(c.get("Ready", {}).get("status") == "False" for c in seen), "never reported not Ready"
    lost = [c["NodesInSync"] for c in seen if c.get("NodesInSync", {}).get("status") == "False"]
    assert lost and all(member in c["message"] for c in lost), lost
    assert lost[0]["reason"] == "VMMissing", lost[0]
    events = [
        e["message"]
        for e in (await lab.get("events"))["items"]
        if e["involvedObject"].get("kind") == "K3sCluster"
        and e["involvedObject"]["name"] == cluster
        and e["reason"] == "DriftDetected"
    ]
    assert any(member in m and str(old_vmid) in m for m in events), events

    # the ProxmoxVM cloned exactly one new VM; the old one stays gone
    new = next(n for n in healed["status"]["nodes"] if n["name"] == member)
    vms = await _vms_named(pve_sim, member)
    assert [vm["vmid"] for vm in vms] == [new["vmid"]], vms
    pvm = await lab.get("pvm", member)
    assert pvm["status"]["vmid"] == new["vmid"]
    # a new machine: a new host key pinned, K3s installed there, the stale Node replaced by a new one
    assert new["hostKeyFingerprint"] != old_key
    assert new["k3sVersion"] and new["ip"]
    nodes = await lab.nodes(cluster)
    node = nodes[member]
    assert node_ready(node) and node["metadata"]["uid"] != old_node["metadata"]["uid"]
    addresses = {a["address"] for a in node["status"].get("addresses") or [] if a["type"] == "InternalIP"}
    assert addresses == {new["ip"]}, (addresses, old_ip)
    assert all(node_ready(n) for n in nodes.values()), nodes
    deleted = [
        e["message"]
        for e in (await lab.get("events"))["items"]
        if e["reason"] == "NodeDeleted" and e["involvedObject"]["name"] == cluster
    ]
    assert any(member in m for m in deleted), deleted
    # the cluster itself survived: same init server, kubeconfig Secret untouched
    assert healed["status"]["initServer"] == init_server
    kept = await lab.get("secret", f"{cluster}-kubeconfig")
    assert kept["metadata"]["uid"] == secret["metadata"]["uid"]
    assert kept["data"] == secret["data"]


async def test_vm_destroyed_outside_is_recloned_and_rejoins(lab: Lab, pve_sim: Any) -> None:
    """3 servers + 1 agent: the agent's VM destroyed, then a joined server's VM destroyed."""
    await lab.apply(lab.manifest("vd", 3, 1))
    ready = await lab.ready("vd")
    assert ready["status"]["initServer"] == "vd-server-0"
    await _replace_behind_the_back(lab, pve_sim, "vd", "vd-agent-0")
    await _replace_behind_the_back(lab, pve_sim, "vd", "vd-server-2")
    nodes = await lab.nodes("vd")
    assert set(nodes) == {"vd-server-0", "vd-server-1", "vd-server-2", "vd-agent-0"}

    # what the operator's /metrics says about all this
    scraped = await lab.metrics()

    def metric(name: str, **labels: str) -> float:
        return scraped.get((name, frozenset(labels.items())), 0.0)

    assert metric("k3sdeploy_objects", kind="K3sCluster", phase="Ready") == 1
    assert metric("k3sdeploy_reconcile_total", kind="K3sCluster", result="success", reason="Succeeded") > 0
    assert metric("k3sdeploy_reconcile_duration_seconds_count", kind="K3sCluster") > 0
    # 4 first installs and the 2 members that rejoined; every operation logged in first
    assert metric("k3sdeploy_ssh_operations_total", operation="install_k3s", result="ok") == 6
    assert metric("k3sdeploy_ssh_operations_total", operation="connect", result="ok") > 6
    assert metric("k3sdeploy_ssh_operations_total", operation="probe", result="ok") > 6
    assert metric("k3sdeploy_ssh_operations_total", operation="fetch_kubeconfig", result="ok") > 0
    assert metric("k3sdeploy_ssh_operation_duration_seconds_count", operation="install_k3s") == 6
