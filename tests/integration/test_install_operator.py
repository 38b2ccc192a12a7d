"""The operator, authenticated as exactly the installed ServiceAccount, provisions a VM end to end.

The single-namespace and tenant-namespaces overlays are applied to the real apiserver; the operator
process gets a client certificate for `system:serviceaccount:<ns>:k3s-deploy-operator` and nothing
else (with tenant-namespaces it works in a tenant's namespace, not its own), and drives a
ProxmoxVM through clone -> configure -> start -> Ready -> delete against the Proxmox VE simulator.
A permission missing from the manifests shows up as a 403 in its log or a ProxmoxVM that never gets
Ready. Afterwards no secret value may appear in the operator's log, the namespace's Events or the
object (spec, status, annotations).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops.harness import health, needs_go
from unit.shipping.kustomize import cluster_scoped_names, install, operator_user
from unit.shipping.tenants import install_tenants

pytestmark = pytest.mark.integration

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@k3s-deploy"


@dataclass
class Installed:
    operator_namespace: str  # where the ServiceAccount lives
    namespace: str  # where the operator works (its own with single-namespace, a tenant's otherwise)


@pytest.fixture(params=["single-namespace", "tenant-namespaces"])
def installed(request: pytest.FixtureRequest, kubectl: Any, tmp_path: Path) -> Iterator[Installed]:
    suffix = secrets.token_hex(3)
    namespace = f"k3sd-o-{suffix}"  # short: the user name must fit a certificate CN
    created = [namespace]
    if request.param == "tenant-namespaces":
        tenant = f"tenant-{suffix}"
        created.append(tenant)
        for ns in created:
            kubectl("create", "namespace", ns)
        docs = install_tenants(kubectl, namespace, [tenant], tmp_path / "install")
        it = Installed(namespace, tenant)
    else:
        kubectl("create", "namespace", namespace)
        docs = install(kubectl, "single-namespace", namespace, tmp_path / "install")
        it = Installed(namespace, namespace)
    try:
        yield it
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=false", *cluster_scoped_names(docs), check=False)
        for ns in created:
            kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.timeout(300)
@needs_go
def test_operator_as_its_service_account_provisions_and_leaks_nothing(
    kubectl: Any,
    installed: Installed,
    mint_kubeconfig: Callable[..., Path],
    pve_sim: Any,
    start_operator: Callable[..., Any],
    kube_json: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    ns = installed.namespace
    secret_values = {"tokenSecret": pve_sim.token_secret}
    ca = pve_sim.ca if "-----BEGIN" in pve_sim.ca else Path(pve_sim.ca).read_text()  # a PEM file's path
    data = {"url": pve_sim.url, "tokenId": pve_sim.token_id, "caCert": ca, **secret_values}
    kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "pve", "namespace": ns},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
        ),
    )
    user, groups = operator_user(installed.operator_namespace)
    operator = start_operator(ns, kubeconfig=mint_kubeconfig(user, groups), env={"K3SD_LOG_FORMAT": "json"})

    vm = {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {"name": "web-1", "namespace": ns},
        "spec": {
            "credentialsRef": {"name": "pve"},
            "node": "pve2",
            "source": {"clone": {"template": {"name": "ubuntu-2404-cloud"}}},
            "resources": {"cores": 2, "memoryMiB": 1024, "diskGiB": 8},
            "cloudInit": {"user": "k3s", "sshAuthorizedKeys": [KEY], "ipConfig": {"dhcp": True}},
            "deletionPolicy": "Delete",
        },
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(vm))
    # kstatus as users consume it: kubectl wait on the Ready condition.
    waited = kubectl(
        "wait", "--for=condition=Ready", "proxmoxvm/web-1", "-n", ns, "--timeout=100s", check=False
    )
    obj = kube_json("pvm", "web-1", "-n", ns)
    if waited.returncode != 0:
        tail = [line for line in operator.logs().splitlines() if "connectionpool" not in line][-40:]
        raise AssertionError(f"{waited.stderr}\nstatus: {obj.get('status')}\n" + "\n".join(tail))
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["vmid"] and status["powerState"] == "Running"
    vmid = int(status["vmid"])
    # kstatus: once Ready, Reconciling and Stalled are absent; Argo CD's check reads it as Healthy.
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types["Ready"] == "True" and "Reconciling" not in types and "Stalled" not in types
    assert health(obj)[0] == "Healthy"

    # A permanent error: Stalled=True with what to fix, Degraded for Argo CD, Ready not True.
    broken = {**vm, "metadata": {"name": "broken", "namespace": ns}}
    broken["spec"] = {**vm["spec"], "source": {"clone": {"template": {"name": "no-such-template"}}}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(broken))
    kubectl("wait", "--for=condition=Stalled", "proxmoxvm/broken", "-n", ns, "--timeout=60s")
    stalled = kube_json("pvm", "broken", "-n", ns)
    state, message = health(stalled)
    assert state == "Degraded" and "TemplateNotFound" in message, (state, message)
    kubectl("delete", "proxmoxvm", "broken", "-n", ns, "--wait=false")
    events = (kube_json("events", "-n", ns) or {}).get("items", [])
    assert any(e.get("involvedObject", {}).get("name") == "web-1" for e in events), "no Event posted"

    kubectl("delete", "proxmoxvm", "web-1", "-n", ns, "--wait=false")
    wait_for(lambda: not kube_json("pvm", "-n", ns).get("items"), timeout=120, what="ProxmoxVM deleted")
    remaining = {int(i["vmid"]) for i in pve_sim.api().cluster.resources.get(type="vm")}
    assert vmid not in remaining

    logs = operator.logs()
    lowered = logs.lower()
    assert "forbidden" not in lowered and " 403" not in logs, "the operator hit a missing permission"
    object_lines = []
    for line in logs.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("name") == "web-1":
                object_lines.append(record)
    assert object_lines, "no JSON log record carries the object's keys"
    assert all(r.get("namespace") == ns and r.get("kind") == "ProxmoxVM" for r in object_lines)

    events_text = json.dumps(kube_json("events", "-n", ns))
    for key, value in secret_values.items():
        assert value not in logs, f"{key} leaked into the operator log"
        assert value not in events_text, f"{key} leaked into an Event"
        assert value not in json.dumps(obj), f"{key} leaked into the ProxmoxVM object"
