"""The operator's Kubernetes gateway against a real apiserver, requests made by path (kube_raw.py).

Each port method is checked for what the apiserver ends up holding, and a fresh process that makes
every call is checked not to load the client's generated API classes and their ~250 models.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

from fixtures.kube import Kubectl
from k3s_deploy.adapters.kube import KubernetesGateway
from k3s_deploy.api.common import GROUP, VERSION
from k3s_deploy.api.proxmoxvm import PLURAL
from k3s_deploy.errors import KubeUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
VM = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "ProxmoxVM",
    "metadata": {"name": "raw-vm", "labels": {"k3sdeploy.io/cluster": "c1"}},
    "spec": {
        "credentialsRef": {"name": "pve"},
        "source": {"existing": {"vmid": 4242}},
        "powerState": "Stopped",
    },
}


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    wait = ("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    for _ in range(30):  # right after the apply the CRD may have no conditions yet: wait fails at once
        if kubectl(*wait, check=False).returncode == 0:
            return
        time.sleep(1)
    kubectl(*wait)


def _get(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def _apply_vm(kubectl: Kubectl, namespace: str) -> None:
    for _ in range(30):  # the CRD's REST mapping may lag its Established condition for a moment
        if kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(VM), check=False).returncode == 0:
            return
        time.sleep(1)
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(VM))


async def test_every_gateway_call_reaches_the_apiserver_by_path(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, crds: None
) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]  # unannotated
    kube = KubernetesGateway(api_client=api)
    kubectl("create", "secret", "generic", "pve", "-n", namespace, "--from-literal=tokenSecret=s3cr3t")
    _apply_vm(kubectl, namespace)

    assert await kube.read_secret(namespace, "pve") == {"tokenSecret": b"s3cr3t"}
    assert await kube.read_secret(namespace, "absent") is None
    found = await kube.read_object(GROUP, VERSION, PLURAL, namespace, "raw-vm")
    assert found is not None and found["spec"]["source"]["existing"]["vmid"] == 4242
    assert await kube.read_object(GROUP, VERSION, PLURAL, namespace, "absent") is None
    assert [
        o["metadata"]["name"] for o in await kube.list_objects(GROUP, VERSION, PLURAL, namespace, "")
    ] == ["raw-vm"]
    assert await kube.list_objects(GROUP, VERSION, PLURAL, namespace, "k3sdeploy.io/cluster=other") == []

    written = await kube.patch_status(
        GROUP, VERSION, PLURAL, namespace, "raw-vm", {"vmid": 4242, "node": "pve1"}
    )
    assert written == _get(kubectl, PLURAL, "raw-vm", "-n", namespace)["metadata"]["resourceVersion"]
    await kube.patch_annotations(GROUP, VERSION, PLURAL, namespace, "raw-vm", {"example.com/a": "1"})
    obj = _get(kubectl, PLURAL, "raw-vm", "-n", namespace)
    assert obj["status"]["vmid"] == 4242 and obj["status"]["node"] == "pve1"
    assert obj["metadata"]["annotations"]["example.com/a"] == "1"
    assert obj["metadata"]["labels"] == {"k3sdeploy.io/cluster": "c1"}  # a merge patch, not a replace
    assert await kube.patch_status(GROUP, VERSION, PLURAL, namespace, "gone", {"vmid": 1}) is None  # 404

    await kube.post_event(obj, type_="Warning", reason="RawPathTest", message="token s3cr3t refused")
    events = _get(kubectl, "events", "-n", namespace, "--field-selector", "reason=RawPathTest")["items"]
    assert len(events) == 1
    event = events[0]
    assert event["involvedObject"]["uid"] == obj["metadata"]["uid"] and event["type"] == "Warning"
    assert "s3cr3t" not in event["message"]  # the Secret value read above is masked

    with pytest.raises(KubeUnavailable, match="422"):  # the apiserver's refusal maps as before
        await kube.patch_status(GROUP, VERSION, PLURAL, namespace, "raw-vm", {"vmid": "not-a-number"})


SCRIPT = """
import asyncio, base64, sys
from k3s_deploy.adapters.kube import KubernetesGateway
from k3s_deploy.api.common import GROUP, VERSION
from k3s_deploy.api.proxmoxvm import PLURAL

async def main(ns):
    kube = KubernetesGateway()
    await kube.read_secret(ns, "pve")
    obj = await kube.read_object(GROUP, VERSION, PLURAL, ns, "raw-vm")
    await kube.list_objects(GROUP, VERSION, PLURAL, ns, "")
    await kube.patch_status(GROUP, VERSION, PLURAL, ns, "raw-vm", {"node": "pve2"})
    await kube.post_event(obj, type_="Normal", reason="RawImports", message="ok")

asyncio.run(main(sys.argv[1]))
print(sorted(m for m in sys.modules if m.startswith("kubernetes.client.api.")))
print(len([m for m in sys.modules if m.startswith("kubernetes.client.models.")]))
"""


def test_the_gateway_loads_no_generated_api_class_or_its_models(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, crds: None
) -> None:
    kubectl("create", "secret", "generic", "pve", "-n", namespace, "--from-literal=a=b")
    _apply_vm(kubectl, namespace)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, namespace], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    apis, models = proc.stdout.split("\n")[:2]
    assert apis == "[]"  # CoreV1Api / CustomObjectsApi would each pull in hundreds of models
    assert int(models) < 10, models
    assert _get(kubectl, PLURAL, "raw-vm", "-n", namespace)["status"]["node"] == "pve2"
    assert base64.b64decode(_get(kubectl, "secret", "pve", "-n", namespace)["data"]["a"]) == b"b"
