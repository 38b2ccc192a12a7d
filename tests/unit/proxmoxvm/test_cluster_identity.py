"""The stable cluster id (issue 17): a child re-created under a new cluster uid finds its VM again by
the id in ``<cluster>-token``; a tenant's own Secret with a guessed id derives another tag
(docs/security.md, item 4)."""

from __future__ import annotations

import copy

import pytest

from k3s_deploy.errors import InvalidSpec
from k3s_deploy.services import ownership
from k3s_deploy.services.cluster_identity import (
    CLUSTER_ID_KEY,
    identity_tag,
    new_cluster_id,
    read_cluster_id,
)
from k3s_deploy.services.ownership import ownership_tag

from .driver import Driver, body
from .fake import FakeKube
from .test_reconcile import AGENT, clone_spec, cluster_owner_ref, pve_with_template

OLD_UID = "c1c2c3c4-5555-6666-7777-888899990000"
NEW_UID = "d1d2d3d4-5555-6666-7777-888899990000"


def test_ids_are_128_random_bits_and_the_tag_tells_nothing_of_the_id() -> None:
    ids = {new_cluster_id() for _ in range(64)}
    assert len(ids) == 64 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    for cluster_id in ids:
        tag = identity_tag(cluster_id)
        assert ownership.is_ownership_tag(tag)
        assert tag[len("k3sdeploy-") :] not in cluster_id  # not a prefix: a hash of it
    # the tag of an id built from a visible tag is another tag (no fixed point to aim at)
    seen = identity_tag(next(iter(ids)))
    assert identity_tag(seen[len("k3sdeploy-") :] + "0" * 16) != seen
    # nor does a uid written as an id give the uid's tag
    assert identity_tag(OLD_UID.replace("-", "")) != ownership_tag(OLD_UID)


@pytest.mark.parametrize("bad", [b"abc", b"A" * 32, b"g" * 32, b"0" * 31, b"0" * 33, b"x\n" * 16])
def test_a_short_or_malformed_id_is_refused_with_a_readable_reason(bad: bytes) -> None:
    with pytest.raises(InvalidSpec) as exc:
        read_cluster_id({CLUSTER_ID_KEY: bad}, secret="c-token")
    assert exc.value.reason == "ClusterIdInvalid" and "c-token" in exc.value.message
    assert bad.decode(errors="replace") not in exc.value.message or len(bad) < 6
    assert read_cluster_id({}, secret="c-token") is None
    assert read_cluster_id({CLUSTER_ID_KEY: b"0f" * 16 + b"\n"}, secret="c-token") == "0f" * 16


def _child(uid: str, child_uid: str) -> dict[str, object]:
    obj = body(clone_spec(), name="c-server-0", uid=child_uid)
    obj["metadata"]["ownerReferences"] = [cluster_owner_ref("c", uid)]  # type: ignore[index]
    return obj


def _driver(cluster_uid: str, child_uid: str, cluster_id: str | None, pve: object = None) -> Driver:
    drv = Driver(_child(cluster_uid, child_uid), pve or pve_with_template())  # type: ignore[arg-type]
    drv.kube.objects[("k3sclusters", "ns", "c")] = {"metadata": {"name": "c", "uid": cluster_uid}}
    if cluster_id is not None:
        drv.kube.secrets[("ns", "c-token")] = {CLUSTER_ID_KEY: cluster_id.encode(), "token": b"t" * 40}
    return drv


async def up(drv: Driver) -> None:
    """Passes until Ready, the guest agent answering in every VM once it exists."""
    await drv.once()
    for vm in drv.proxmox.vms.values():
        vm.agent_interfaces = AGENT
    await drv.converge()


async def test_the_same_child_under_a_new_cluster_uid_reclaims_its_vm_by_the_stable_id() -> None:
    cluster_id = new_cluster_id()
    first = _driver(OLD_UID, "0a0a0a0a-1111-2222-3333-444455556666", cluster_id)
    await up(first)
    vmid = first.obj["status"]["vmid"]
    tags = first.proxmox.vms[vmid].config["tags"].split(";")
    assert identity_tag(cluster_id) in tags
    clones = first.proxmox.calls["clone"]

    # the management cluster is gone: a new K3sCluster uid, a new child uid, no status
    moved = _driver(NEW_UID, "0b0b0b0b-1111-2222-3333-444455556666", cluster_id, first.proxmox)
    await up(moved)
    assert moved.obj["status"]["vmid"] == vmid
    assert moved.proxmox.calls["clone"] == clones, "no second clone"
    assert [e for e in moved.outcomes[0].events if e.reason == "CloneStarted"] == []


@pytest.mark.parametrize("guess", ["tag-padded", "uid", "none"])
async def test_a_guessed_or_missing_id_clones_a_vm_of_its_own(guess: str) -> None:
    cluster_id = new_cluster_id()
    victim = _driver(OLD_UID, "0a0a0a0a-1111-2222-3333-444455556666", cluster_id)
    await up(victim)
    vmid = victim.obj["status"]["vmid"]
    before = copy.deepcopy(victim.proxmox.vms[vmid].config)
    seen = identity_tag(cluster_id)[len("k3sdeploy-") :]
    forged = {"tag-padded": seen + "0" * 16, "uid": OLD_UID.replace("-", ""), "none": None}[guess]
    tenant = _driver(NEW_UID, "0c0c0c0c-1111-2222-3333-444455556666", forged, victim.proxmox)
    await up(tenant)
    assert tenant.obj["status"]["vmid"] != vmid
    assert victim.proxmox.vms[vmid].config == before


async def test_children_of_a_cluster_without_an_id_keep_the_uid_tag_and_gain_the_id_tag() -> None:
    legacy = _driver(OLD_UID, "0a0a0a0a-1111-2222-3333-444455556666", None)
    await up(legacy)
    vmid = legacy.obj["status"]["vmid"]
    assert ownership_tag(OLD_UID) in legacy.proxmox.vms[vmid].config["tags"].split(";")
    cluster_id = new_cluster_id()
    legacy.kube.secrets[("ns", "c-token")] = {CLUSTER_ID_KEY: cluster_id.encode()}
    legacy.expire()
    legacy.memory.verified_owners.clear()
    await legacy.converge()
    assert legacy.obj["status"]["vmid"] == vmid
    tags = legacy.proxmox.vms[vmid].config["tags"].split(";")
    assert {ownership_tag(OLD_UID), identity_tag(cluster_id)} <= set(tags)


async def test_the_id_is_read_only_for_a_verified_owner() -> None:
    kube = FakeKube()
    kube.secrets[("ns", "c-token")] = {CLUSTER_ID_KEY: new_cluster_id().encode()}
    metadata = {
        "name": "x",
        "namespace": "ns",
        "uid": "u",
        "ownerReferences": [cluster_owner_ref("c", OLD_UID)],
    }
    assert await ownership.cluster_tag(kube, metadata, "u") == ""  # owner_uid did not verify the claim
    assert await ownership.cluster_tag(kube, metadata, OLD_UID) != ""
