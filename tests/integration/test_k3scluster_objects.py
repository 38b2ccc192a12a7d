"""The K3sCluster's management-cluster adapter against the real apiserver: children and Secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config as k8s_config

from k3s_deploy import errors
from k3s_deploy.adapters.kube_children import KubeClusterObjects
from k3s_deploy.services.k3scluster.secrets import managed_labels
from k3s_deploy.services.k3scluster.topology import ClusterRef, Member, child_manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def objects(kubeconfig: Path) -> KubeClusterObjects:
    return KubeClusterObjects(k8s_config.new_client_from_config(config_file=str(kubeconfig)))


def _pvm(namespace: str, name: str, cluster: str = "demo") -> dict[str, Any]:
    ref = ClusterRef(cluster, namespace, "0b1c2d3e-0000-0000-0000-000000000000")
    member = Member(name, "server", 0, {
        "credentialsRef": {"name": "pve"},
        "source": {"clone": {"template": {"name": "debian"}}},
    })  # fmt: skip
    return child_manifest(ref, member, ip_config={"dhcp": True})


async def test_children_create_list_patch_delete(
    objects: KubeClusterObjects, namespace: str, crds: str, kubectl: Any
) -> None:
    created = await objects.create_child(_pvm(namespace, "demo-server-0"))
    assert created["metadata"]["uid"]
    again = await objects.create_child(_pvm(namespace, "demo-server-0"))
    assert again["metadata"]["uid"] == created["metadata"]["uid"], "create is idempotent"
    await objects.create_child(_pvm(namespace, "other-server-0", cluster="other"))
    listed = await objects.list_children(namespace, "demo")
    assert [c["metadata"]["name"] for c in listed] == ["demo-server-0"]
    assert listed[0]["metadata"]["ownerReferences"][0]["kind"] == "K3sCluster"
    await objects.patch_child_spec(namespace, "demo-server-0", {"tags": ["k3s"]})
    got = json.loads(kubectl("get", "pvm", "demo-server-0", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["tags"] == ["k3s"] and got["spec"]["cloudInit"] == {
        "ipConfig": {"dhcp": True},
        "interface": 0,
    }
    with pytest.raises(errors.InvalidSpec):
        bad = _pvm(namespace, "demo-server-1")
        bad["spec"]["source"] = {}
        await objects.create_child(bad)
    await objects.delete_child(namespace, "demo-server-0")
    await objects.delete_child(namespace, "demo-server-0")  # a missing one is fine


async def test_secrets_are_written_and_deleted_only_when_ours(
    objects: KubeClusterObjects, namespace: str, kubectl: Any
) -> None:
    labels = managed_labels("demo")
    assert await objects.write_secret(namespace, "demo-token", {"token": b"t0"}, labels=labels, owner=None)
    assert not await objects.write_secret(
        namespace, "demo-token", {"token": b"t0"}, labels=labels, owner=None
    )
    assert await objects.write_secret(namespace, "demo-token", {"token": b"t1"}, labels=labels, owner=None)
    assert await objects.read_secret(namespace, "demo-token") == {"token": b"t1"}
    # a key left out is kept (a merge), unless the write drops the others
    assert await objects.write_secret(namespace, "demo-token", {"stale": b"x"}, labels=labels, owner=None)
    assert await objects.read_secret(namespace, "demo-token") == {"token": b"t1", "stale": b"x"}
    assert not await objects.write_secret(
        namespace, "demo-token", {"token": b"t1"}, labels=labels, owner=None
    )
    assert await objects.write_secret(
        namespace, "demo-token", {"token": b"t1"}, labels=labels, owner=None, drop_others=True
    )
    assert await objects.read_secret(namespace, "demo-token") == {"token": b"t1"}
    assert await objects.read_secret(namespace, "missing") is None

    kubectl("create", "secret", "generic", "users-own", "-n", namespace, "--from-literal=token=keep")
    with pytest.raises(errors.InvalidSpec) as info:
        await objects.write_secret(namespace, "users-own", {"token": b"x"}, labels=labels, owner=None)
    assert info.value.reason == "SecretConflict"
    assert not await objects.delete_managed_secret(namespace, "users-own", labels=labels)
    assert await objects.read_secret(namespace, "users-own") == {"token": b"keep"}
    # labels come with the data, so a tenant's reference to an operator-written Secret can be refused
    assert await objects.read_secret_labelled(namespace, "users-own") == ({"token": b"keep"}, {})
    assert await objects.read_secret_labelled(namespace, "demo-token") == ({"token": b"t1"}, labels)
    assert await objects.read_secret_labelled(namespace, "missing") is None

    assert await objects.delete_managed_secret(namespace, "demo-token", labels=labels)
    assert await objects.read_secret(namespace, "demo-token") is None
    assert not await objects.delete_managed_secret(namespace, "demo-token", labels=labels)
