"""The workload-cluster adapter's day-2 writes against a real kube-apiserver: cordon, uncordon,
drain through the Eviction API (a PodDisruptionBudget refuses, with a timeout), delete a Node.

No kubelet runs here, so the test plays the kubelet's part: pods the eviction marked for deletion
are removed with grace period 0, as a kubelet confirms a pod's termination.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.kube import Kubectl
from k3s_deploy import errors
from k3s_deploy.adapters.target_cluster import KubernetesTargetCluster
from k3s_deploy.ports.target import DrainOptions
from k3s_deploy.services.k3scluster.drain import drain

pytestmark = pytest.mark.integration


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"test": "day2"}}}


def pod(
    name: str, node_name: str, *, labels: dict[str, str], owner: str | None = "ReplicaSet"
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner,
                "name": "x",
                "uid": "0c0e7f38-0000-4000-8000-000000000001",
                "controller": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "busybox"}]},
    }


async def play_kubelet(kubectl: Kubectl, namespace: str, stop: asyncio.Event) -> None:
    """Remove pods that are terminating (deletionTimestamp set), as a kubelet would."""
    while not stop.is_set():
        out = await asyncio.to_thread(kubectl, "get", "pods", "-n", namespace, "-o", "json")
        for item in json.loads(out.stdout)["items"]:
            if item["metadata"].get("deletionTimestamp"):
                await asyncio.to_thread(
                    kubectl, "delete", "pod", item["metadata"]["name"], "-n", namespace,
                    "--grace-period=0", "--force", "--wait=false", check=False,
                )  # fmt: skip
        await asyncio.sleep(0.3)


async def test_cordon_drain_delete_on_a_real_apiserver(
    kubectl: Kubectl, kubeconfig: Path, namespace: str
) -> None:
    name = f"day2-{secrets.token_hex(3)}"
    kubectl("apply", "-f", "-", input=yaml.safe_dump(node(name)))
    try:
        target = KubernetesTargetCluster()
        text = await asyncio.to_thread(kubeconfig.read_text)
        # cordon / uncordon
        assert await target.set_unschedulable(text, name, True)
        spec = json.loads(kubectl("get", "node", name, "-o", "json").stdout)["spec"]
        assert spec.get("unschedulable") is True
        assert any(n.name == name and n.unschedulable for n in await target.nodes(text))
        assert await target.set_unschedulable(text, name, False)
        spec = json.loads(kubectl("get", "node", name, "-o", "json").stdout)["spec"]
        assert not spec.get("unschedulable")
        assert not await target.set_unschedulable(text, name + "-missing", True)

        # drain: a managed pod is evicted, a DaemonSet pod stays, an unmanaged pod needs force
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(
            [pod("web", name, labels={"app": "web"}), pod("agent", name, labels={"app": "ds"}, owner="DaemonSet"),
             pod("stray", name, labels={"app": "stray"}, owner=None)]
        ))  # fmt: skip
        stop = asyncio.Event()
        kubelet = asyncio.create_task(play_kubelet(kubectl, namespace, stop))
        try:
            with pytest.raises(errors.PermanentError) as refused:
                await drain(target, text, name, DrainOptions(timeout_s=10))
            assert refused.value.reason == "DrainFailed" and "stray" in refused.value.message
            evicted = await drain(target, text, name, DrainOptions(timeout_s=20, force=True))
            assert evicted == 2
            left = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
            assert [p["metadata"]["name"] for p in left] == ["agent"]

            # a PodDisruptionBudget that allows no disruption: eviction refused (429) until the timeout
            pdb = {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
            }
            kubectl(
                "apply",
                "-n",
                namespace,
                "-f",
                "-",
                input=yaml.safe_dump_all([pdb, pod("web", name, labels={"app": "web"})]),
            )
            # a Pending pod may always be evicted: make it Running and Ready, as a kubelet would report
            running = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
            kubectl(
                "patch",
                "pod",
                "web",
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(running),
            )
            with pytest.raises(errors.TransientError) as timed_out:
                await drain(target, text, name, DrainOptions(timeout_s=3))
            assert timed_out.value.reason == "DrainTimeout" and "web" in timed_out.value.message
            assert json.loads(kubectl("get", "pod", "web", "-n", namespace, "-o", "json").stdout)["metadata"][
                "name"
            ]
        finally:
            stop.set()
            await kubelet

        # delete the Node; a second delete finds nothing
        assert await target.delete_node(text, name)
        assert not await target.delete_node(text, name)
        assert all(n.name != name for n in await target.nodes(text))
    finally:
        kubectl("delete", "node", name, "--ignore-not-found", check=False)
