"""A named agent pool end to end: its agent registers with the pool's labels and taint, a label
changed in the spec reaches the existing Node through the cluster's API (no reinstall), and the pool
scales 1 -> 2 -> 1 on its own."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from k3s_deploy_lab.sample_cluster import node_template

from .conftest import Lab
from .growth_helpers import nodes, patch, ready, settled, wait_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TAINT = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


def taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: t[k] for k in ("key", "value", "effect") if k in t} for t in node["spec"].get("taints") or []]


def pool_status(n: int) -> Any:
    return lambda c: (c["status"].get("pools") or [{}])[0] == {"name": "gpu", "replicas": n, "ready": n}


def test_pool_with_labels_and_taint_syncs_changes_and_scales_on_its_own(lab: Lab) -> None:
    pool = {
        "name": "gpu",
        "replicas": 1,
        "template": node_template(lab.public_key, user="ubuntu"),
        "nodeLabels": {"example.com/gpu": "t4", "tier": "compute"},
        "nodeTaints": ["dedicated=gpu:NoSchedule"],
    }
    lab.apply(lab.cluster("pooled", servers=1, agents=0, extra_spec={"agentPools": [pool]}))
    st = settled(lab, "pooled", pool_status(1))["status"]
    assert st["poolSummary"] == "gpu 1/1" and st["readyAgents"] == 1
    assert {n["name"]: n.get("pool") for n in st["nodes"]} == {"pooled-server-0": None, "pooled-gpu-0": "gpu"}
    child = lab.get("pvm", "pooled-gpu-0")
    assert child["metadata"]["labels"]["k3sdeploy.io/pool"] == "gpu"

    found = nodes(lab, "pooled")
    agent = found["pooled-gpu-0"]
    assert ready(agent)
    assert (
        agent["metadata"]["labels"]["example.com/gpu"] == "t4"
        and agent["metadata"]["labels"]["tier"] == "compute"
    )
    assert TAINT in taints(agent)
    # K3s got them at registration (its node-args), not only through the API afterwards
    args = agent["metadata"]["annotations"].get("k3s.io/node-args", "")
    assert "--node-label" in args and "dedicated=gpu:NoSchedule" in args
    assert "tier" not in found["pooled-server-0"]["metadata"]["labels"]
    vmid = next(n["vmid"] for n in st["nodes"] if n["name"] == "pooled-gpu-0")

    # a label someone else set stays; the spec's change reaches the existing node
    lab.target_kubectl("pooled", "label", "node", "pooled-gpu-0", "owner=someone")
    changed = copy.deepcopy(pool)
    changed["nodeLabels"] = {"example.com/gpu": "a100"}
    changed["nodeTaints"] = []
    patch(lab, "pooled", {"agentPools": [changed]})
    found = wait_nodes(
        lab,
        "pooled",
        lambda f: (
            f["pooled-gpu-0"]["metadata"]["labels"].get("example.com/gpu") == "a100"
            and "tier" not in f["pooled-gpu-0"]["metadata"]["labels"]
            and TAINT not in taints(f["pooled-gpu-0"])
        ),
    )
    assert found["pooled-gpu-0"]["metadata"]["labels"]["owner"] == "someone"
    assert lab.events("pooled", "NodeMetadataSynced")
    st = settled(lab, "pooled", pool_status(1))["status"]
    assert next(n["vmid"] for n in st["nodes"] if n["name"] == "pooled-gpu-0") == vmid  # same VM
    assert (
        sum(
            int(e.get("count") or 1)
            for e in lab.events("pooled", "Installing")
            if "pooled-gpu-0" in e["message"]
        )
        == 1
    )

    # the pool scales on its own: 1 -> 2 -> 1
    changed["replicas"] = 2
    patch(lab, "pooled", {"agentPools": [changed]})
    settled(lab, "pooled", pool_status(2), timeout=300)
    found = nodes(lab, "pooled")
    assert found["pooled-gpu-1"]["metadata"]["labels"]["example.com/gpu"] == "a100" and ready(
        found["pooled-gpu-1"]
    )
    changed["replicas"] = 1
    patch(lab, "pooled", {"agentPools": [changed]})
    settled(lab, "pooled", lambda c: pool_status(1)(c) and len(c["status"]["nodes"]) == 2, timeout=300)
    found = wait_nodes(lab, "pooled", lambda f: "pooled-gpu-1" not in f)
    assert sorted(found) == ["pooled-gpu-0", "pooled-server-0"]
    drained = [e["message"] for e in lab.events("pooled", "NodeDeleted")]
    assert any("pooled-gpu-1" in m for m in drained)
    deadline = time.monotonic() + 120
    while lab.get("pvm", "pooled-gpu-1") is not None and time.monotonic() < deadline:
        time.sleep(1.0)
    assert lab.get("pvm", "pooled-gpu-1") is None
