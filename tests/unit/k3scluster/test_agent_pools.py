"""Named agent pools: members and names per pool, per-pool scaling and status, labels and taints at
install and synced on existing nodes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from k3s_deploy.api.k3scluster import K3sClusterSpec
from k3s_deploy.ports.target import Taint, TargetNode
from k3s_deploy.services.k3scluster import nodemeta, registration
from k3s_deploy.services.k3scluster.desired import desired
from k3s_deploy.services.k3scluster.topology import LABEL_POOL, ClusterRef

from .day2_world import World, body, bump, cond

TEMPLATE = {"clone": {"template": {"name": "debian-12"}}, "cloudInit": {"user": "root"}}
REF = ClusterRef("demo", "team", "abcdef12-0000-0000-0000-000000000000")


def pool(name: str, replicas: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "replicas": replicas, "template": copy.deepcopy(TEMPLATE), **extra}


def spec_with(*pools: dict[str, Any], agents: int = 1) -> K3sClusterSpec:
    b = body(1, agents, agentPools=list(pools))
    return K3sClusterSpec.model_validate(b["spec"])


def test_pool_members_are_named_per_pool_after_servers_and_default_agents() -> None:
    spec = spec_with(pool("gpu", 2, nodeLabels={"gpu": "true"}), pool("edge", 1))
    want = desired(REF, spec, allocations={})
    assert [m.name for m in want.members] == [
        "demo-server-0",
        "demo-agent-0",
        "demo-gpu-0",
        "demo-gpu-1",
        "demo-edge-0",
    ]
    assert [m.pool for m in want.members] == [None, None, "gpu", "gpu", "edge"]
    labels = want.manifests["demo-gpu-1"]["metadata"]["labels"]
    assert labels[LABEL_POOL] == "gpu" and labels["k3sdeploy.io/role"] == "agent"
    assert LABEL_POOL not in want.manifests["demo-agent-0"]["metadata"]["labels"]
    assert want.member("demo-gpu-0").node_labels == {"gpu": "true"}
    # every member got its own pool address
    assert len(set(want.static_ips.values())) == 5


def test_growing_one_pool_keeps_the_names_and_addresses_of_the_others() -> None:
    small = desired(REF, spec_with(pool("gpu", 1), pool("edge", 1)), allocations={})
    grown = desired(REF, spec_with(pool("gpu", 3), pool("edge", 1)), allocations=dict(small.static_ips))
    for name, address in small.static_ips.items():
        assert grown.static_ips[name] == address
    assert {"demo-gpu-1", "demo-gpu-2"} <= set(grown.static_ips)


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        ([pool("gpu", 1), pool("gpu", 2)], "must be unique"),
        ([pool("agent", 1)], "must not be server or agent"),
        ([pool("Gpu", 1)], "DNS label"),
        ([pool("gpu", 1, nodeTaints=["dedicated=gpu:Never"])], "is not a taint"),
        ([pool("gpu", 1, nodeLabels={"bad key": "x"})], "nodeLabels must be Kubernetes labels"),
        ([pool("gpu", 1, nodeLabels={"ok": "-bad"})], "nodeLabels must be Kubernetes labels"),
    ],
)
def test_invalid_pools_are_refused_with_a_message(pools: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec_with(*pools)


def test_valid_labels_and_taints_are_accepted() -> None:
    spec = spec_with(
        pool(
            "gpu",
            1,
            nodeLabels={"example.com/tier": "gpu", "plain": ""},
            nodeTaints=["dedicated=gpu:NoSchedule", "example.com/flaky:PreferNoSchedule"],
        )
    )
    assert spec.agent_pools[0].node_taints == [
        "dedicated=gpu:NoSchedule",
        "example.com/flaky:PreferNoSchedule",
    ]


def test_registration_renders_installer_args_and_config_keys() -> None:
    labels, taints = {"b": "2", "a": "1"}, ["dedicated=gpu:NoSchedule"]
    assert registration.args(labels, taints) == [
        "--node-label",
        "a=1",
        "--node-label",
        "b=2",
        "--node-taint",
        "dedicated=gpu:NoSchedule",
    ]
    assert registration.config(labels, taints) == {
        "node-label": ["a=1", "b=2"],
        "node-taint": ["dedicated=gpu:NoSchedule"],
    }
    assert registration.config({}, []) == {}


# --- the label/taint diff ---------------------------------------------------------------------------


def node(labels: dict[str, str], taints: tuple[Taint, ...] = (), **annotations: str) -> TargetNode:
    return TargetNode("n", True, "v1.31.4+k3s1", labels=labels, annotations=annotations, taints=taints)


MANAGED = {"k3sdeploy.io/managed-labels": "gpu,zone"}


def test_diff_adds_and_corrects_and_records_what_it_manages() -> None:
    patch = nodemeta.diff(
        node({"gpu": "false", "kubernetes.io/os": "linux"}), {"gpu": "true", "zone": "a"}, []
    )
    assert patch is not None
    assert patch.labels == {"gpu": "true", "zone": "a"}
    assert patch.annotations == {"k3sdeploy.io/managed-labels": "gpu,zone"}
    assert patch.taints is None


def test_diff_removes_only_labels_it_set_before() -> None:
    current = node({"gpu": "true", "zone": "a", "user": "x"}, **MANAGED)
    patch = nodemeta.diff(current, {"gpu": "true"}, [])
    assert patch is not None
    assert patch.labels == {"zone": None}  # "user" was never ours: untouched
    assert patch.annotations == {"k3sdeploy.io/managed-labels": "gpu"}


def test_diff_is_none_when_in_sync() -> None:
    current = node(
        {"gpu": "true", "zone": "a"}, **MANAGED, **{"k3sdeploy.io/managed-taints": "dedicated:NoSchedule"}
    )
    current = TargetNode(
        "n",
        True,
        "v",
        labels=current.labels,
        annotations=current.annotations,
        taints=(Taint("dedicated", "NoSchedule", "gpu"),),
    )
    assert nodemeta.diff(current, {"gpu": "true", "zone": "a"}, ["dedicated=gpu:NoSchedule"]) is None


def test_diff_replaces_its_taints_and_keeps_foreign_ones() -> None:
    foreign = Taint("node.kubernetes.io/unreachable", "NoExecute", None, "2026-01-01T00:00:00Z")
    current = TargetNode(
        "n",
        True,
        "v",
        annotations={"k3sdeploy.io/managed-taints": "dedicated:NoSchedule,old:NoSchedule"},
        taints=(foreign, Taint("dedicated", "NoSchedule", "gpu"), Taint("old", "NoSchedule")),
    )
    patch = nodemeta.diff(current, {}, ["dedicated=ml:NoSchedule"])
    assert patch is not None and patch.taints is not None
    assert list(patch.taints) == [foreign, Taint("dedicated", "NoSchedule", "ml")]
    assert patch.annotations == {"k3sdeploy.io/managed-taints": "dedicated:NoSchedule"}


# --- whole passes ------------------------------------------------------------------------------------


async def pooled_cluster() -> tuple[World, dict[str, Any]]:
    b = body(
        1,
        0,
        agentPools=[
            pool("gpu", 2, nodeLabels={"gpu": "true"}, nodeTaints=["dedicated=gpu:NoSchedule"]),
            pool("edge", 1),
        ],
    )
    b["spec"]["servers"]["nodeLabels"] = {"tier": "control"}
    w = World()
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    w.ops.clear()
    return w, b


async def test_pool_members_register_with_their_labels_and_taints_and_status_counts_each_pool() -> None:
    w, b = await pooled_cluster()
    labels, _, taints, _ = w.target.meta["demo-gpu-1"]
    assert labels == {"gpu": "true"} and taints == [Taint("dedicated", "NoSchedule", "gpu")]
    assert w.target.meta["demo-server-0"][0] == {"tier": "control"}
    assert w.target.meta["demo-edge-0"][0] == {}
    assert b["status"]["pools"] == [
        {"name": "gpu", "replicas": 2, "ready": 2},
        {"name": "edge", "replicas": 1, "ready": 1},
    ]
    assert b["status"]["poolSummary"] == "gpu 2/2, edge 1/1"
    assert b["status"]["readyAgents"] == 3
    assert {n["name"]: n.get("pool") for n in b["status"]["nodes"]}["demo-gpu-0"] == "gpu"


async def test_a_label_change_is_synced_on_existing_nodes_without_a_reinstall() -> None:
    w, b = await pooled_cluster()
    w.target.meta["demo-gpu-0"][0]["user-label"] = "mine"  # set by someone else: never touched
    b["spec"]["agentPools"][0]["nodeLabels"] = {"gpu": "a100"}
    b["spec"]["agentPools"][0]["nodeTaints"] = []
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    assert w.of("install") == []
    for name in ("demo-gpu-0", "demo-gpu-1"):
        labels, annotations, taints, _ = w.target.meta[name]
        assert labels["gpu"] == "a100" and taints == []
        assert annotations["k3sdeploy.io/managed-labels"] == "gpu"
    assert w.target.meta["demo-gpu-0"][0]["user-label"] == "mine"
    assert w.target.meta["demo-edge-0"][0] == {}  # another pool: untouched
    # dropping the label removes it (it was ours), once
    b["spec"]["agentPools"][0]["nodeLabels"] = {}
    bump(b)
    await w.settle(b)
    assert "gpu" not in w.target.meta["demo-gpu-0"][0]
    count = len(w.target.patches)
    await w.settle(b)
    assert len(w.target.patches) == count  # in sync: no more patches


async def test_scaling_one_pool_down_removes_only_its_members_drained() -> None:
    w, b = await pooled_cluster()
    b["spec"]["agentPools"][0]["replicas"] = 1
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True"
    assert w.objects.deleted_children == ["demo-gpu-1"]
    assert [op for op, n in w.ops if n == "demo-gpu-1"] == ["cordon", "drain", "delete-node", "uninstall"]
    assert b["status"]["pools"][0] == {"name": "gpu", "replicas": 1, "ready": 1}
    assert b["status"]["pools"][1] == {"name": "edge", "replicas": 1, "ready": 1}
    # scaling it up again creates the same name, which joins with the pool's labels
    b["spec"]["agentPools"][0]["replicas"] = 2
    bump(b)
    for key in [k for k, c in w.objects.children.items() if c["metadata"].get("deletionTimestamp")]:
        del w.ssh.hosts[w.ip(key[1])]
        del w.objects.children[key]
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and b["status"]["pools"][0]["ready"] == 2
    assert w.target.meta["demo-gpu-1"][0] == {"gpu": "true"}
