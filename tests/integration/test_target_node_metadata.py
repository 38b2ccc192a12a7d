"""The workload-cluster adapter's label/taint sync against a real kube-apiserver: the patch sets and
removes labels and the operator's bookkeeping annotations, replaces the taint list, and a Node that
changed since it was read is refused (resourceVersion) instead of overwritten."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
import yaml

from fixtures.kube import Kubectl
from k3s_deploy import errors
from k3s_deploy.adapters.target_cluster import KubernetesTargetCluster
from k3s_deploy.ports.target import TargetNode
from k3s_deploy.services.k3scluster import nodemeta

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_labels_and_taints_sync_on_a_real_node(kubectl: Kubectl, kubeconfig: Path) -> None:
    name = f"meta-{secrets.token_hex(3)}"
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"user": "keep", "gpu": "t4"}},
        "spec": {"taints": [{"key": "foreign", "effect": "NoExecute"}]},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(node))
    try:
        target = KubernetesTargetCluster()
        text = await asyncio.to_thread(kubeconfig.read_text)

        async def read() -> TargetNode:
            return next(n for n in await target.nodes(text) if n.name == name)

        current = await read()
        patch = nodemeta.diff(current, {"gpu": "a100", "tier": "x"}, ["dedicated=gpu:NoSchedule"])
        assert patch is not None
        assert await target.patch_node_metadata(text, name, patch)
        obj = json.loads(kubectl("get", "node", name, "-o", "json").stdout)
        assert obj["metadata"]["labels"]["gpu"] == "a100" and obj["metadata"]["labels"]["tier"] == "x"
        assert obj["metadata"]["labels"]["user"] == "keep"
        assert obj["metadata"]["annotations"][nodemeta.MANAGED_LABELS] == "gpu,tier"
        # ours added; the foreign one kept (and any the node lifecycle controller adds meanwhile)
        assert {("foreign", None), ("dedicated", "gpu")} <= {
            (t["key"], t.get("value")) for t in obj["spec"]["taints"]
        }

        # the spec drops tier and the taint: only what the operator set goes
        current = await read()
        patch = nodemeta.diff(current, {"gpu": "a100"}, [])
        assert patch is not None and await target.patch_node_metadata(text, name, patch)
        obj = json.loads(kubectl("get", "node", name, "-o", "json").stdout)
        assert "tier" not in obj["metadata"]["labels"] and obj["metadata"]["labels"]["user"] == "keep"
        keys = [t["key"] for t in obj["spec"]["taints"]]
        assert "foreign" in keys and "dedicated" not in keys
        assert nodemeta.MANAGED_TAINTS not in obj["metadata"]["annotations"]
        assert nodemeta.diff(await read(), {"gpu": "a100"}, []) is None

        # someone changes the Node between the read and the patch: refused, nothing overwritten
        stale = await read()
        kubectl("label", "node", name, "gpu=h100", "--overwrite")
        patch = nodemeta.diff(stale, {"gpu": "a100", "new": "1"}, [])
        assert patch is not None
        with pytest.raises(errors.KubeUnavailable):
            await target.patch_node_metadata(text, name, patch)
        labels = json.loads(kubectl("get", "node", name, "-o", "json").stdout)["metadata"]["labels"]
        assert labels["gpu"] == "h100" and "new" not in labels
        assert not await target.patch_node_metadata(text, name + "-missing", patch)
    finally:
        kubectl("delete", "node", name, "--wait=false", check=False)
