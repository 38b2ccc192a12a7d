"""Ownership rules (docs/security.md, item 4): the owner's uid is verified, never read from a label;
adoption and the destruction of an adopted VM need the admin's marker; status is never trusted."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from k3s_deploy.errors import InvalidSpec
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services import ownership
from k3s_deploy.services.ownership import AdoptionPolicy, check_adoptable, ownership_tag
from k3s_deploy.services.proxmoxvm import plan
from k3s_deploy.settings import OperatorSettings

from .driver import Driver, body
from .fake import FakeKube, FakeProxmox
from .test_reconcile import AGENT, clone_spec, cluster_owner_ref, pve_with_template

OWN_UID = "0a1b2c3d-1111-2222-3333-444455556666"
CLUSTER_UID = "c1c2c3c4-5555-6666-7777-888899990000"
VICTIM_UID = "feedbeef-0000-1111-2222-333344445555"


def meta(**extra: Any) -> dict[str, Any]:
    return {"name": "vm-a", "namespace": "ns", "uid": OWN_UID, **extra}


def kube_with_cluster(name: str = "c", uid: str = CLUSTER_UID, namespace: str = "ns") -> FakeKube:
    kube = FakeKube()
    kube.objects[("k3sclusters", namespace, name)] = {"metadata": {"name": name, "uid": uid}}
    return kube


def test_tag_is_16_hex_digits_of_the_uid_and_recognised_among_other_tags() -> None:
    assert ownership_tag(CLUSTER_UID.upper()) == "k3sdeploy-c1c2c3c455556666"
    assert ownership.is_ownership_tag("k3sdeploy-c1c2c3c455556666")
    assert ownership.is_ownership_tag("k3sdeploy-c1c2c3c4")  # the shorter tag of older versions
    assert not ownership.is_ownership_tag("k3sdeploy-adoptable") and not ownership.is_ownership_tag("k3s")
    tags = ["k3s", "k3sdeploy-adoptable", "k3sdeploy-c1c2c3c455556666", ownership_tag(VICTIM_UID)]
    assert ownership.foreign_ownership_tags(tags, ownership_tag(CLUSTER_UID)) == [ownership_tag(VICTIM_UID)]


async def test_a_label_never_chooses_the_owner() -> None:
    kube = FakeKube()
    labels = {"k3sdeploy.io/cluster-uid": VICTIM_UID, "k3sdeploy.io/cluster": "victim"}
    assert await ownership.owner_uid(kube, meta(labels=labels), set()) == OWN_UID
    assert kube.object_reads == 0


async def test_a_verified_controller_reference_gives_the_cluster_uid_once() -> None:
    kube = kube_with_cluster()
    verified: set[str] = set()
    metadata = meta(ownerReferences=[cluster_owner_ref("c", CLUSTER_UID)])
    assert await ownership.owner_uid(kube, metadata, verified) == CLUSTER_UID
    assert await ownership.owner_uid(kube, metadata, verified) == CLUSTER_UID
    assert kube.object_reads == 1  # a uid never moves: one read per object and process


@pytest.mark.parametrize(
    ("cluster", "why"),
    [
        (None, "does not exist"),  # copied from another namespace: no such cluster here
        ({"metadata": {"name": "c", "uid": "00000000-0000-0000-0000-000000000000"}}, "has uid"),
    ],
)
async def test_a_forged_controller_reference_stalls(cluster: dict[str, Any] | None, why: str) -> None:
    kube = FakeKube()
    if cluster is not None:
        kube.objects[("k3sclusters", "ns", "c")] = cluster
    with pytest.raises(InvalidSpec) as err:
        await ownership.owner_uid(kube, meta(ownerReferences=[cluster_owner_ref("c", CLUSTER_UID)]), set())
    assert err.value.reason == "OwnerNotVerified" and why in err.value.message
    assert "ns/c" in err.value.message and not err.value.transient


async def test_references_that_are_not_a_k3scluster_controller_are_ignored() -> None:
    kube = kube_with_cluster()
    not_controller = {**cluster_owner_ref("c", CLUSTER_UID), "controller": False}
    other_kind = {**cluster_owner_ref("c", CLUSTER_UID), "kind": "ConfigMap"}
    other_group = {**cluster_owner_ref("c", CLUSTER_UID), "apiVersion": "evil.io/v1alpha1"}
    for ref in (not_controller, other_kind, other_group):
        assert await ownership.owner_uid(kube, meta(ownerReferences=[ref]), set()) == OWN_UID


def vm(tags: str = "", pool: str | None = None) -> VmSummary:
    return VmSummary(
        vmid=105, node="pve1", name="legacy", tags=frozenset(t for t in tags.split(";") if t), pool=pool
    )


def test_adoption_policy_by_tag_or_pool_and_what_to_tell_the_admin() -> None:
    default = AdoptionPolicy()
    assert default.allows(vm("k3sdeploy-adoptable")) and not default.allows(vm("prod"))
    pooled = AdoptionPolicy.from_settings("", "k3s")
    assert (
        pooled.tag is None and pooled.allows(vm(pool="k3s")) and not pooled.allows(vm("k3sdeploy-adoptable"))
    )
    both = AdoptionPolicy.from_settings("ok-to-adopt", "k3s")
    assert both.how() == "add the Proxmox tag ok-to-adopt or move it into the Proxmox pool k3s"
    assert "disabled" in AdoptionPolicy(tag=None).how() and not AdoptionPolicy(tag=None).allows(vm("x"))


def test_check_adoptable_refuses_unmarked_and_foreign_owned_vms() -> None:
    own = ownership_tag(OWN_UID)
    with pytest.raises(InvalidSpec) as err:
        check_adoptable(AdoptionPolicy(), vm("prod"), own)
    assert err.value.reason == "AdoptionNotAllowed"
    assert "pve1/105 (legacy)" in err.value.message and "k3sdeploy-adoptable" in err.value.message
    # a clone inherits its template's tags, the adoptable marker too: its owner's tag still protects it
    with pytest.raises(InvalidSpec) as err:
        check_adoptable(AdoptionPolicy(), vm(f"k3sdeploy-adoptable;{ownership_tag(VICTIM_UID)}"), own)
    assert err.value.reason == "AdoptionNotAllowed" and ownership_tag(VICTIM_UID) in err.value.message
    check_adoptable(AdoptionPolicy(), vm(f"k3sdeploy-adoptable;{own}"), own)


def test_settings_carry_the_marker_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorSettings().adoptable_tag == "k3sdeploy-adoptable"
    monkeypatch.setenv("K3SD_ADOPTABLE_TAG", "ok-to-adopt")
    monkeypatch.setenv("K3SD_ADOPTABLE_POOL", "k3s")
    settings = OperatorSettings()
    assert (settings.adoptable_tag, settings.adoptable_pool) == ("ok-to-adopt", "k3s")
    with pytest.raises(ValidationError):
        OperatorSettings(adoptable_tag="Not A Tag;")


def test_another_owners_tag_in_spec_tags_is_never_written() -> None:
    from k3s_deploy.api.proxmoxvm import ProxmoxVMSpec

    own = ownership_tag(OWN_UID)
    spec = ProxmoxVMSpec.model_validate(
        {
            "credentialsRef": {"name": "pve"},
            "source": {"clone": {"template": {"name": "debian-tpl"}}},
            "tags": ["k3s", ownership_tag(VICTIM_UID), own],
        }
    )
    assert plan.wanted_tags(spec, own) == {"k3s", own}
    changes = plan.plan_config(spec, {"tags": "tpl"}, name=None, owner_tag=own).changes
    assert changes["tags"] == f"k3s;{own};tpl"


async def test_forged_status_pointing_at_another_owners_vm_is_refused() -> None:
    """status.vmid/conditions copied onto a clone: the recorded VM is checked, not trusted."""
    pve = pve_with_template()
    victim = pve.add_vm(100, "pve1", name="vm-a", tags=f"{ownership_tag(VICTIM_UID)};k3s", cores=2)
    victim.config["description"] = f"k3sdeploy-owner={VICTIM_UID}"
    victim.status, victim.uptime, victim.agent_interfaces = "running", 50, AGENT
    obj = body(clone_spec(powerState="Stopped", deletionPolicy="Delete"))
    obj["status"] = {
        "vmid": 100,
        "node": "pve1",
        "conditions": [{"type": "VMProvisioned", "status": "True", "reason": "Cloned", "message": ""}],
    }
    drv = Driver(obj, pve)
    await drv.converge()
    stalled = drv.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "NotOwned", drv.obj["status"]
    assert pve.mutating_calls() == 0 and victim.status == "running"
    drv.obj["status"]["adopted"] = True  # a cache: finalize goes by the spec
    with pytest.raises(InvalidSpec):
        await drv.delete()
    assert 100 in pve.vms and pve.mutating_calls() == 0


async def adopted(tags: str = "k3sdeploy-adoptable", **spec: Any) -> Driver:
    pve = FakeProxmox()
    found = pve.add_vm(105, "pve2", name="legacy", tags=tags)
    found.status, found.uptime, found.agent_interfaces = "running", 50, AGENT
    drv = Driver(body({"source": {"existing": {"vmid": 105}}, **spec}), pve)
    await drv.converge()
    return drv


async def test_unmarked_vm_is_not_adopted_until_marked() -> None:
    drv = await adopted(tags="prod", powerState="Stopped")
    stalled = drv.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "AdoptionNotAllowed"
    assert drv.obj["status"]["vmid"] is None and drv.proxmox.mutating_calls() == 0
    drv.proxmox.vms[105].config["tags"] = "prod;k3sdeploy-adoptable"
    drv.expire()
    await drv.converge()
    assert drv.obj["status"]["vmid"] == 105 and drv.proxmox.vms[105].status == "stopped"


async def test_marker_removed_from_an_adopted_vm_stops_management() -> None:
    drv = await adopted(tags="k3sdeploy-adoptable;prod")
    assert drv.obj["status"]["vmid"] == 105
    drv.proxmox.vms[105].config["tags"] = "prod"
    drv.expire()
    drv.bump(powerState="Stopped")
    await drv.converge()
    assert (drv.condition("Stalled") or {}).get("reason") == "AdoptionNotAllowed"
    assert drv.proxmox.vms[105].status == "running" and drv.proxmox.calls["power"] == 0


@pytest.mark.parametrize("policy", ["Delete", "Stop"])
async def test_adopted_vm_without_marker_at_delete_time_is_retained(policy: str) -> None:
    drv = await adopted(deletionPolicy=policy)
    drv.proxmox.vms[105].config["tags"] = "prod"  # the admin withdrew consent since
    assert await drv.delete()
    assert 105 in drv.proxmox.vms and drv.proxmox.vms[105].status == "running"
    assert drv.proxmox.calls["power"] == 0 and drv.proxmox.calls["destroy"] == 0


async def test_adopted_vm_with_marker_is_destroyed_under_delete() -> None:
    drv = await adopted(deletionPolicy="Delete")
    assert await drv.delete()
    assert 105 not in drv.proxmox.vms
