"""The operator never loads the kubernetes client's generated API classes or their models.

``CoreV1Api``, ``CustomObjectsApi`` and friends import some 250 model modules (about 20 MiB of the
process, issue 21's RSS target). kopf itself imports ``V1ObjectMeta`` and ``V1OwnerReference`` (three
model modules); every Kubernetes call of the operator goes by path (``adapters/kube_raw.py``). A fresh
process imports what ``k3s-deploy run`` imports, then calls every method of the three Kubernetes
adapters against a closed loopback port (each call fails to connect, after building its request
exactly as it would against an apiserver), and lists the client modules it then holds.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

# What kopf's own import brings (kopf/_cogs/helpers/thirdparty.py), nothing else.
KOPF_MODELS = {
    "kubernetes.client.models.v1_object_meta",
    "kubernetes.client.models.v1_owner_reference",
    "kubernetes.client.models.v1_managed_fields_entry",
}

SCRIPT = """
import asyncio, json, sys
import kopf
from kubernetes import client
import k3s_deploy.cli, k3s_deploy.runner
from k3s_deploy.handlers import k3scluster, proxmoxvm
from k3s_deploy.settings import OperatorSettings
from k3s_deploy.wiring import build_runtime
from k3s_deploy import errors
from k3s_deploy.adapters.kube import KubernetesGateway
from k3s_deploy.adapters.kube_children import KubeClusterObjects
from k3s_deploy.adapters.target_cluster import KubernetesTargetCluster
from k3s_deploy.ports.target import NodeMetadataPatch

build_runtime(OperatorSettings())
at_start = sorted(m for m in sys.modules if m.startswith("kubernetes.client."))

configuration = client.Configuration()
configuration.host = "http://127.0.0.1:%d" % int(sys.argv[1])
configuration.retries = 0
api = client.ApiClient(configuration)
gateway = KubernetesGateway(api_client=api)
objects = KubeClusterObjects(api, request_timeout=2)
target = KubernetesTargetCluster(request_timeout=2)
target._client = lambda kubeconfig: api
vm = {"metadata": {"namespace": "ns", "name": "vm"}, "spec": {}}
g = ("k3sdeploy.io", "v1alpha1", "proxmoxvms", "ns")
calls = [
    gateway.read_secret("ns", "s"), gateway.read_object(*g, "vm"), gateway.list_objects(*g, ""),
    gateway.patch_status(*g, "vm", {"phase": "x"}), gateway.patch_annotations(*g, "vm", {"a": "b"}),
    gateway.post_event({"metadata": {"name": "vm"}}, type_="Normal", reason="R", message="m"),
    objects.list_children("ns", "c"), objects.list_namespace_vms("ns"), objects.create_child(vm),
    objects.patch_child_spec("ns", "vm", {}), objects.patch_child_annotations("ns", "vm", {"a": "b"}),
    objects.delete_child("ns", "vm"), objects.read_secret("ns", "s"), objects.read_config_map("ns", "c"),
    objects.write_secret("ns", "s", {"k": b"v"}, labels={"l": "v"}, owner=None),
    objects.delete_managed_secret("ns", "s", labels={"l": "v"}),
    objects.patch_cluster_status("ns", "c", {"phase": "x"}),
    target.nodes("k"), target.set_unschedulable("k", "n", True), target.delete_node("k", "n"),
    target.patch_node_metadata("k", "n", NodeMetadataPatch(labels={"a": "b"})),
    target.pods_on("k", "n"), target.evict("k", "ns", "p"),
]

async def main():
    failed = []
    for call in calls:
        try:
            await call
        except errors.KubeUnavailable:
            failed.append("KubeUnavailable")
        except Exception as exc:
            failed.append(type(exc).__name__)
    return failed

failed = asyncio.run(main())
after = sorted(m for m in sys.modules if m.startswith("kubernetes.client."))
print(json.dumps({"at_start": at_start, "after": after, "failed": failed, "calls": len(calls)}))
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_generated_api_class_or_model_is_loaded_at_start_up_or_by_any_kubernetes_call() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(_closed_port())], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["failed"] == ["KubeUnavailable"] * found["calls"]  # each call went out and was refused
    for stage in ("at_start", "after"):
        apis = [m for m in found[stage] if m.startswith("kubernetes.client.api.")]
        models = {m for m in found[stage] if m.startswith("kubernetes.client.models.")}
        assert apis == [], (stage, apis)
        assert models <= KOPF_MODELS, (stage, sorted(models - KOPF_MODELS))


CONTROLLER_SCRIPT = """
import json, sys
import kopf
import k3s_deploy.cli, k3s_deploy.runner
from k3s_deploy.handlers import k3scluster_entry, proxmoxvm
from k3s_deploy.settings import OperatorSettings
from k3s_deploy.wiring import build_runtime

def controller():
    return sorted(m for m in sys.modules if m.startswith(("k3s_deploy.services.k3scluster",
        "k3s_deploy.api.k3scluster", "k3s_deploy.handlers.k3scluster")) and m != "k3s_deploy.handlers.k3scluster_entry")

runtime = build_runtime(OperatorSettings())
k3scluster_entry.register(kopf.OperatorRegistry())
at_start = controller()
deps = runtime.cluster_ports()
print(json.dumps({"at_start": at_start, "after": controller(), "same": runtime.cluster_ports() is deps}))
"""


def test_the_k3scluster_controller_loads_at_its_first_use_not_at_start_up() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CONTROLLER_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["at_start"] == []
    assert "k3s_deploy.services.k3scluster.state" in found["after"]
    assert "k3s_deploy.api.k3scluster" in found["after"]
    assert found["same"]  # built once: the address claims and the adapters' caches are shared


def test_the_entry_names_the_controllers_plural_and_label() -> None:
    from k3s_deploy.api.k3scluster import PLURAL
    from k3s_deploy.handlers import k3scluster_entry
    from k3s_deploy.services.k3scluster.topology import LABEL_CLUSTER

    assert (k3scluster_entry.PLURAL, k3scluster_entry.LABEL_CLUSTER) == (PLURAL, LABEL_CLUSTER)


async def test_a_forwarder_hands_kopfs_arguments_to_the_controllers_handler() -> None:
    import kopf

    from k3s_deploy.handlers import k3scluster_entry
    from k3s_deploy.settings import OperatorSettings
    from k3s_deploy.wiring import Runtime

    registry = kopf.OperatorRegistry()
    k3scluster_entry.register(registry)
    wake = next(h for h in registry._watching.get_all_handlers() if h.id == "k3scluster-wake")
    runtime = Runtime(settings=OperatorSettings(), kube=None, sessions=None)  # type: ignore[arg-type]
    body = kopf.Body({"metadata": {"uid": "u1", "name": "c", "namespace": "n", "generation": 3}, "spec": {}})
    await wake.fn(body=body, memo=kopf.Memo(runtime=runtime), type="MODIFIED", logger=None)
    assert runtime.seen["u1"][:2] == ("spec", 3) and runtime.wakeup("u1").is_set()
