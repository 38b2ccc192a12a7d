"""The pydantic models: samples parse, defaults are what the docs say, bad input is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from k3s_deploy.api.common import ApiModel, Condition, condition
from k3s_deploy.api.k3scluster import K3sCluster, K3sClusterSpec, K3sClusterStatus
from k3s_deploy.api.proxmoxvm import ProxmoxVM, ProxmoxVMSpec, ProxmoxVMStatus
from unit.api.cases import INVALID, VALID, Invalid, Valid, load_samples, sample
from unit.api.statuses import full_cluster_status, full_vm_status, unset_fields

MODELS: dict[str, type[ApiModel]] = {"K3sCluster": K3sCluster, "ProxmoxVM": ProxmoxVM}
CUSTOM = [(name, doc) for name, docs in load_samples().items() for doc in docs if doc["kind"] in MODELS]


def test_there_is_a_sample_for_every_mode() -> None:
    names = set(load_samples())
    assert len(CUSTOM) >= 9
    vms = [ProxmoxVM.model_validate(doc) for _, doc in CUSTOM if doc["kind"] == "ProxmoxVM"]
    clusters = [K3sCluster.model_validate(doc) for _, doc in CUSTOM if doc["kind"] == "K3sCluster"]
    assert any(vm.spec.source.clone for vm in vms)
    existing = [vm.spec.source.existing for vm in vms if vm.spec.source.existing]
    assert any(e.vmid for e in existing) and any(e.name for e in existing) and any(e.tags for e in existing)
    pools = [
        (c.spec.servers.replicas, c.spec.agents.replicas if c.spec.agents else 0)
        for c in clusters
        if c.spec.servers
    ]
    assert (1, 0) in pools and (3, 2) in pools
    discovery = [c.spec.discovery for c in clusters if c.spec.discovery]
    assert any(d.tags for d in discovery) and any(d.locations for d in discovery)
    assert any(c.spec.network and c.spec.network.ip_pool for c in clusters)
    assert any(c.spec.k3s.install_source and c.spec.k3s.install_source.air_gap for c in clusters)
    assert "secrets.yaml" in names


@pytest.mark.parametrize(("name", "doc"), CUSTOM, ids=[name for name, _ in CUSTOM])
def test_sample_parses_and_round_trips(name: str, doc: dict[str, Any]) -> None:
    model = MODELS[doc["kind"]].model_validate(doc)
    again = MODELS[doc["kind"]].model_validate(model.to_k8s())
    assert again == model


def test_secrets_sample_holds_only_placeholders() -> None:
    secrets = load_samples()["secrets.yaml"]
    assert {s["metadata"]["name"] for s in secrets} == {"proxmox-credentials", "k3s-ssh-key"}
    creds = next(s for s in secrets if s["metadata"]["name"] == "proxmox-credentials")["stringData"]
    assert set(creds) >= {"url", "tokenId", "tokenSecret"}
    assert set(creds["tokenSecret"]) <= {"0", "-"}
    key = next(s for s in secrets if s["type"] == "kubernetes.io/ssh-auth")["stringData"]["ssh-privatekey"]
    assert "PRIVATE KEY-----" not in key


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_resource_is_refused_by_the_model(case: Invalid) -> None:
    obj = case.build()
    with pytest.raises(ValidationError) as info:
        MODELS[obj["kind"]].model_validate(obj)
    assert case.expected_model_message in str(info.value)


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_valid_variant_is_accepted_by_the_model(case: Valid) -> None:
    obj = case.build()
    MODELS[obj["kind"]].model_validate(obj)


def test_vm_defaults() -> None:
    spec = ProxmoxVMSpec.model_validate(
        {"credentialsRef": {"name": "pve"}, "source": {"clone": {"template": {"vmid": 9000}}}}
    )
    assert spec.power_state == "Running"
    assert spec.restart_policy == "Manual"
    assert spec.shutdown_timeout_seconds == 120
    assert spec.insecure_skip_tls_verify is False
    assert spec.source.clone is not None and spec.source.clone.full is True
    assert spec.deletion_policy is None
    assert spec.effective_deletion_policy() == "Delete"


def test_adopted_vms_are_retained_unless_told_otherwise() -> None:
    adopted = ProxmoxVM.model_validate(sample("proxmoxvm-adopt-vmid.yaml")).spec
    assert adopted.effective_deletion_policy() == "Retain"
    assert (
        ProxmoxVM.model_validate(sample("proxmoxvm-adopt-name.yaml")).spec.effective_deletion_policy()
        == "Stop"
    )


def test_cluster_defaults() -> None:
    spec = K3sCluster.model_validate(sample("k3scluster-single-server.yaml")).spec
    assert spec.ssh.port == 22
    assert spec.ssh.host_key_policy == "GuestAgent"
    assert spec.k3s.channel_server == "https://update.k3s.io/v1-release/channels"
    assert spec.k3s.auto_upgrade is False and spec.k3s.allow_downgrade is False
    assert spec.upgrade.agent_concurrency == 1 and spec.upgrade.drain.enabled is True
    assert spec.servers is not None and spec.servers.template.deletion_policy == "Delete"
    assert spec.power_state == "Running" and spec.paused is False
    discovered = K3sCluster.model_validate(sample("k3scluster-discovery-tags.yaml")).spec
    assert discovered.discovery is not None and discovered.discovery.deletion_policy == "Retain"


def test_yaml_is_camel_case_and_python_is_snake_case() -> None:
    spec = K3sClusterSpec.model_validate(sample("k3scluster-ha.yaml")["spec"])
    assert spec.k3s.tls_sans == ["k3s.example.internal"]
    out = spec.to_k8s()
    assert out["k3s"]["tlsSANs"] == ["k3s.example.internal"]
    assert out["servers"]["template"]["resources"]["memoryMiB"] == 4096
    assert out["network"]["ipPool"]["cidr"] == "192.168.20.0/24"
    assert "insecureSkipTLSVerify" in out
    status = full_cluster_status().to_k8s()
    assert {
        "serverURL",
        "k3sVersion",
        "kubeconfigSecretRef",
        "readyServers",
        "ipAllocations",
    } <= status.keys()
    assert status["nodes"][0]["pveNode"] == "pve1"
    assert status["nodes"][0]["hostKeyFingerprint"].startswith("SHA256:")


def test_spec_refuses_unknown_fields_status_ignores_them() -> None:
    doc = sample("proxmoxvm-adopt-vmid.yaml")
    doc["spec"]["cpus"] = 4
    with pytest.raises(ValidationError, match="cpus"):
        ProxmoxVM.model_validate(doc)
    status = ProxmoxVMStatus.model_validate({"vmid": 120, "fieldFromANewerOperator": 1})
    assert status.vmid == 120


@pytest.mark.parametrize("build", [full_vm_status, full_cluster_status])
def test_full_statuses_set_every_field_and_round_trip(build: Any) -> None:
    status = build()
    assert set(unset_fields(status)) <= {"upgrade.failed_node", "upgrade.finished_time"}
    assert type(status).model_validate(status.to_k8s()) == status


def test_condition_lookup_and_time_format() -> None:
    status = K3sClusterStatus.model_validate(full_cluster_status().to_k8s())
    ready = condition(status.conditions, "Ready")
    assert isinstance(ready, Condition) and ready.status == "True"
    assert condition(status.conditions, "Stalled") is None
    assert status.to_k8s()["conditions"][0]["lastTransitionTime"] == "2026-11-28T12:00:00Z"


def test_kstatus_condition_dicts_from_the_services_parse() -> None:
    from k3s_deploy.services.conditions import Conditions

    conditions = Conditions([], generation=2, now="2026-11-28T12:00:00Z")
    conditions.set("Ready", False, "Provisioning", "cloning web-1")
    status = ProxmoxVMStatus.model_validate({"conditions": conditions.as_list()})
    assert status.conditions[0].reason == "Provisioning"
    assert status.conditions[0].observed_generation == 2
