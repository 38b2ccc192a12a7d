"""The generated CRDs against a real kube-apiserver: they install, accept every sample, refuse bad
objects with messages a person can act on, keep every status field, and make kubectl useful."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from fixtures.kube import Kubectl
from k3s_deploy.api import crdgen
from k3s_deploy.api.k3scluster import K3sCluster
from k3s_deploy.api.proxmoxvm import ProxmoxVM
from unit.api.cases import INVALID, VALID, Invalid, Valid, load_samples, sample
from unit.api.statuses import full_cluster_status, full_vm_status

pytestmark = pytest.mark.integration

CRD_NAMES = [kind.crd_name for kind in crdgen.KINDS]
SAMPLE_FILES = sorted(load_samples())
PLURALS = {"K3sCluster": "k3sclusters.k3sdeploy.io", "ProxmoxVM": "proxmoxvms.k3sdeploy.io"}


def _retry(action: Callable[[], Any], *, seconds: float = 30.0) -> Any:
    """Retry while discovery catches up with freshly installed CRDs."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return action()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> list[str]:
    """Install (or update) the CRDs exactly as generated and wait until they are served."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crdgen.render_all())
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in CRD_NAMES))
    _retry(lambda: kubectl("get", "k3sc,pvm", "-A"))
    return CRD_NAMES


def test_crds_are_established_and_structural(kubectl: Kubectl, crds: list[str]) -> None:
    for name in crds:
        obj = json.loads(kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
        assert conditions.get("Established") == "True"
        assert conditions.get("NamesAccepted") == "True"
        assert "NonStructuralSchema" not in conditions
        assert obj["status"]["acceptedNames"]["shortNames"] in (["k3sc"], ["pvm"])
        assert obj["status"]["acceptedNames"]["categories"] == ["k3sdeploy"]


@pytest.mark.parametrize("file_name", SAMPLE_FILES)
def test_every_sample_is_accepted_and_defaulted_like_the_models(
    kubectl: Kubectl, crds: list[str], namespace: str, file_name: str
) -> None:
    docs = load_samples()[file_name]
    out = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    assert out.stdout.count("created") == len(docs), out.stdout
    for doc in docs:
        if doc["kind"] not in PLURALS:
            continue
        stored = json.loads(
            kubectl(
                "get", PLURALS[doc["kind"]], doc["metadata"]["name"], "-n", namespace, "-o", "json"
            ).stdout
        )
        model: type[K3sCluster] | type[ProxmoxVM] = K3sCluster if doc["kind"] == "K3sCluster" else ProxmoxVM
        # What the apiserver stored (with its defaults) means the same as the sample to the operator.
        assert model.model_validate(stored).spec == model.model_validate(doc).spec


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_resource_is_refused_with_an_actionable_message(
    kubectl: Kubectl, crds: list[str], namespace: str, case: Invalid
) -> None:
    obj = case.build()
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, f"{case.id} was accepted: {result.stdout}"
    assert "is invalid" in result.stderr
    assert case.api_message in result.stderr, result.stderr
    found = kubectl("get", PLURALS[obj["kind"]], obj["metadata"]["name"], "-n", namespace, check=False)
    assert found.returncode != 0 and "NotFound" in found.stderr


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_valid_variant_is_accepted(kubectl: Kubectl, crds: list[str], namespace: str, case: Valid) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(case.build()), check=False)
    assert result.returncode == 0, result.stderr


def test_enough_distinct_refusals() -> None:
    assert len({c.api_message for c in INVALID}) >= 15


def test_unknown_fields_are_refused_on_server_side_apply(
    kubectl: Kubectl, crds: list[str], namespace: str
) -> None:
    obj = sample("proxmoxvm-adopt-vmid.yaml")
    obj["spec"]["cpus"] = 4
    result = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0
    assert ".spec.cpus: field not declared in schema" in result.stderr


@pytest.mark.parametrize(
    ("plural", "full_status"),
    [("k3sclusters.k3sdeploy.io", full_cluster_status), ("proxmoxvms.k3sdeploy.io", full_vm_status)],
)
def test_status_keeps_every_field_the_operator_writes(
    kubectl: Kubectl, crds: list[str], namespace: str, plural: str, full_status: Callable[[], Any]
) -> None:
    doc = sample("k3scluster-ha.yaml" if plural.startswith("k3s") else "proxmoxvm-clone.yaml")
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    status = full_status().to_k8s()
    status["kopf"] = {"progress": {"handler": {"retries": 1}}}
    kubectl(
        "patch", plural, doc["metadata"]["name"], "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    stored = json.loads(kubectl("get", plural, doc["metadata"]["name"], "-n", namespace, "-o", "json").stdout)
    assert stored["status"] == status  # nothing pruned, nothing defaulted


def test_kubectl_explain_shows_descriptions(kubectl: Kubectl, crds: list[str]) -> None:
    k3s = _retry(lambda: kubectl("explain", "k3sc.spec.k3s")).stdout
    assert "Pinned K3s release, e.g. v1.31.4+k3s1" in k3s
    assert "Release channel to follow instead of a pinned version" in k3s
    assert "installSource" in k3s and "tokenSecretRef" in k3s
    source = kubectl("explain", "pvm.spec.source").stdout
    assert "Adopt a VM that already exists" in source
    assert "Clone a template into a new VM" in source
    policy = kubectl("explain", "pvm.spec.deletionPolicy").stdout
    assert "Retain for adopted VMs" in policy


def test_kubectl_get_shows_the_printer_columns(kubectl: Kubectl, crds: list[str], namespace: str) -> None:
    cluster, vm = sample("k3scluster-ha.yaml"), sample("proxmoxvm-clone.yaml")
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([cluster, vm]))
    kubectl(
        "patch", "k3sc", "prod", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": full_cluster_status().to_k8s()}),
    )  # fmt: skip
    kubectl(
        "patch", "pvm", "web-1", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": full_vm_status().to_k8s()}),
    )  # fmt: skip
    table = kubectl("get", "k3sc,pvm", "-n", namespace).stdout
    lines = [line.split() for line in table.splitlines() if line.strip()]
    header_cluster = lines[0]
    assert header_cluster == ["NAME", "PHASE", "SERVERS", "AGENTS", "VERSION", "ENDPOINT", "READY", "AGE"]
    assert lines[1][:7] == [
        "k3scluster.k3sdeploy.io/prod", "Upgrading", "3", "1", "v1.30.8+k3s1", "https://192.168.20.10:6443", "True",
    ]  # fmt: skip
    header_vm = lines[2]
    assert header_vm == ["NAME", "NODE", "VMID", "POWER", "IP", "READY", "REASON", "AGE"]
    assert lines[3][:7] == [
        "proxmoxvm.k3sdeploy.io/web-1", "pve1", "120", "Running", "192.168.10.21", "True", "Ready",
    ]  # fmt: skip
    wide = kubectl("get", "k3sc", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-4:] == ["AVAILABLE", "INIT", "REASON", "POOLS"]
    by_category = kubectl("get", "k3sdeploy", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(by_category) == ["k3scluster.k3sdeploy.io/prod", "proxmoxvm.k3sdeploy.io/web-1"]
