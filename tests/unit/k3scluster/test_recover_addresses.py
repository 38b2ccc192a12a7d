"""After a move (no children, the same id in ``<cluster>-token``), members keep the pool addresses their
VMs hold in Proxmox instead of being given new ones in member order (issue 17)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.cluster_identity import CLUSTER_ID_KEY, identity_tag, new_cluster_id
from k3s_deploy.services.k3scluster.reconcile import reconcile

from .test_reconcile import NS, World, cluster_body

# the history: agent-0 came first (.10), servers 1 and 2 later (.12, .13), agent-1 was removed (.11)
HELD = {"demo-server-0": "10.0.0.14", "demo-agent-0": "10.0.0.10", "demo-server-1": "10.0.0.12"}


class Configs:
    def __init__(self, by_vmid: dict[int, dict[str, Any]]) -> None:
        self.by_vmid = by_vmid
        self.reads = 0

    async def vm_config(self, node: str, vmid: int) -> dict[str, Any]:
        self.reads += 1
        return self.by_vmid[vmid]


def _world(cluster_id: str, tag: str) -> tuple[World, Configs]:
    w = World()
    w.objects.secrets[(NS, "demo-token")] = {
        "data": {CLUSTER_ID_KEY: cluster_id.encode()},
        "labels": {"k3sdeploy.io/cluster": "demo", "app.kubernetes.io/managed-by": "k3s-deploy"},
        "owner": None,
    }
    vms = [
        VmSummary(vmid=100 + i, node="pve1", name=name, tags=frozenset({tag})) for i, name in enumerate(HELD)
    ]
    vms.append(
        VmSummary(vmid=200, node="pve1", name="demo-server-2", tags=frozenset({"k3sdeploy-0123456789abcdef"}))
    )
    configs = Configs(
        {100 + i: {"ipconfig0": f"ip={a}/24,gw=10.0.0.1"} for i, a in enumerate(HELD.values())}
        | {200: {"ipconfig0": "ip=10.0.0.11/24"}}
    )

    async def list_vms(_credentials: Any) -> list[VmSummary]:
        return vms

    w.deps = replace(w.deps, list_vms=list_vms, proxmox=lambda _c: configs)  # type: ignore[arg-type,return-value]
    return w, configs


async def test_a_moved_cluster_keeps_the_addresses_its_vms_hold() -> None:
    cluster_id = new_cluster_id()
    w, configs = _world(cluster_id, identity_tag(cluster_id))
    body = cluster_body(3, 1)
    body["metadata"]["uid"] = "99999999-0000-0000-0000-000000000000"  # a new management cluster
    out = await reconcile(body, w.deps, generation=1)
    assert out.status["ipAllocations"] == {**HELD, "demo-server-2": "10.0.0.11"}
    assert configs.reads == 3, "only the VMs carrying the cluster's tag are read"
    # steady state: every member has a child, nothing is read from Proxmox any more
    await reconcile(body, w.deps, generation=1)
    assert configs.reads == 3


async def test_another_clusters_tag_is_not_read() -> None:
    w, configs = _world(new_cluster_id(), identity_tag(new_cluster_id()))
    out = await reconcile(cluster_body(3, 1), w.deps, generation=1)
    assert configs.reads == 0
    assert out.status["ipAllocations"]["demo-server-0"] == "10.0.0.10"  # fresh: lowest first
