"""A workload cluster's Node and Pod JSON, read without the client's models: the values the port gets,
and a field of the wrong type refused (a guest's root controls what serves that API)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from k3s_deploy import errors
from k3s_deploy.adapters import target_cluster, target_json
from k3s_deploy.adapters.target_json import ShapeError
from k3s_deploy.ports.target import Taint

NODE: dict[str, Any] = {
    "metadata": {
        "name": "srv-0",
        "resourceVersion": "812",
        "labels": {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/etcd": "true"},
        "annotations": {"k3s.io/hostname": "srv-0"},
    },
    "spec": {
        "unschedulable": True,
        "taints": [
            {
                "key": "node.kubernetes.io/unreachable",
                "effect": "NoExecute",
                "timeAdded": "2026-12-04T16:47:25Z",
            },
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
        ],
    },
    "status": {
        "conditions": [
            {"type": "MemoryPressure", "status": "False", "lastTransitionTime": "2026-12-04T10:00:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T16:40:01Z"},
        ],
        "addresses": [
            {"type": "Hostname", "address": "srv-0"},
            {"type": "InternalIP", "address": "10.0.0.10"},
        ],
        "nodeInfo": {"kubeletVersion": "v1.31.4+k3s1", "architecture": "amd64"},
    },
}


def test_a_node_reads_into_the_ports_values() -> None:
    node = target_json.node(NODE)
    assert node.name == "srv-0" and node.resource_version == "812"
    assert node.ready and node.unschedulable and node.kubelet_version == "v1.31.4+k3s1"
    assert node.roles == frozenset({"control-plane", "etcd"}) and node.internal_ip == "10.0.0.10"
    assert node.annotations == {"k3s.io/hostname": "srv-0"}
    assert node.taints == (
        Taint("node.kubernetes.io/unreachable", "NoExecute", None, "2026-12-04T16:47:25Z"),
        Taint("dedicated", "NoSchedule", "db", None),
    )
    assert node.ready_changed_at == dt.datetime(2026, 12, 4, 16, 40, 1, tzinfo=dt.UTC)


def test_a_bare_node_is_not_ready_and_has_no_roles() -> None:
    node = target_json.node({"metadata": {"name": "n"}})
    assert (node.ready, node.roles, node.taints, node.kubelet_version, node.ready_changed_at) == (
        False,
        frozenset(),
        (),
        "",
        None,
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("metadata", "name"), 7),
        (("metadata", "labels"), {"arch": 64}),
        (("metadata", "labels"), ["a"]),
        (("spec", "unschedulable"), "yes"),
        (("spec", "taints"), {"key": "x"}),
        (("status", "conditions"), [{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]),
        (("status", "nodeInfo"), {"kubeletVersion": ["v1"]}),
    ],
)
def test_a_node_field_of_the_wrong_type_is_refused(path: tuple[str, str], value: Any) -> None:
    broken = {**NODE, path[0]: {**NODE[path[0]], path[1]: value}}
    with pytest.raises(ShapeError):
        target_json.node(broken)


def test_a_list_answer_must_be_an_object_with_a_list_of_items() -> None:
    assert target_json.items({"items": None}) == []
    for answer in (["x"], "x", {"items": "x"}, {"items": [1]}):
        with pytest.raises(ShapeError):
            target_json.items(answer)


def test_a_pod_reads_what_the_drain_rules_look_at() -> None:
    pod = target_json.pod(
        {
            "metadata": {
                "namespace": "kube-system",
                "name": "p",
                "annotations": {"kubernetes.io/config.mirror": "abc"},
                "deletionTimestamp": "2026-12-04T16:47:25Z",
                "ownerReferences": [
                    {"kind": "Node", "name": "srv-0"},
                    {"kind": "ReplicaSet", "name": "rs", "controller": True},
                ],
            },
            "spec": {
                "nodeName": "srv-0",
                "volumes": [{"name": "v", "configMap": {}}, {"name": "t", "emptyDir": {}}],
            },
        }
    )
    assert pod is not None
    assert (pod.namespace, pod.name, pod.node, pod.controller_kind) == (
        "kube-system",
        "p",
        "srv-0",
        "ReplicaSet",
    )
    assert pod.mirror and pod.empty_dir and pod.terminating
    bare = target_json.pod({"metadata": {"namespace": "d", "name": "q"}})
    assert bare is not None
    assert (bare.controller_kind, bare.mirror, bare.empty_dir, bare.terminating) == (
        None,
        False,
        False,
        False,
    )
    assert target_json.pod({"spec": {}}) is None  # no metadata: skipped, as the client's models did
    with pytest.raises(ShapeError):
        target_json.pod({"metadata": {"name": "nameless-namespace"}})


async def test_a_pod_list_that_is_not_one_is_the_guests_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_cluster, "request", lambda *args, **kwargs: {"items": [{"metadata": []}]})
    adapter = target_cluster.KubernetesTargetCluster()
    monkeypatch.setattr(adapter, "_client", lambda kubeconfig: object())
    with pytest.raises(errors.GuestInputRejected) as caught:
        await adapter.pods_on("kubeconfig", "srv-0")
    assert caught.value.reason == "GuestValueInvalid" and "Pod list" in caught.value.message
