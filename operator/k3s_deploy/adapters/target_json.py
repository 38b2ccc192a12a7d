"""A workload cluster's Node and Pod JSON read into the port's values, each field checked for its type.

The generated client's models used to do this check; the answers now come as plain JSON (requests by
path, :mod:`.kube_raw`), and they come from servers a guest's root controls, so every field read is
checked here and a wrong one is :class:`ShapeError` (the adapter says whose fault it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from k3s_deploy.ports.target import Taint, TargetNode, TargetPod

_ROLE_PREFIX = "node-role.kubernetes.io/"


class ShapeError(ValueError):
    """A field of the answer does not have the type the Kubernetes API gives it."""


def _map(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ShapeError(f"{key}: not an object")
    return value


def _list(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ShapeError(f"{key}: not a list of objects")
    return value


def _str(parent: Mapping[str, Any], key: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise ShapeError(f"{key}: not a string")
    return value


def _strings(parent: Mapping[str, Any], key: str) -> dict[str, str]:
    found = _map(parent, key)
    if not all(isinstance(v, str) for v in found.values()):
        raise ShapeError(f"{key}: a value is not a string")
    return {str(k): v for k, v in found.items()}


def _time(parent: Mapping[str, Any], key: str) -> datetime | None:
    text = _str(parent, key)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ShapeError(f"{key}: not a timestamp") from exc


def _stamp(parent: Mapping[str, Any], key: str) -> str | None:
    """A timestamp as the generated client's datetime printed it (second precision, ``Z``)."""
    value = _time(parent, key)
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def items(listing: Any) -> list[Mapping[str, Any]]:
    """The ``items`` of a list answer."""
    if not isinstance(listing, Mapping):
        raise ShapeError("the answer is not an object")
    return _list(listing, "items")


def node(item: Mapping[str, Any]) -> TargetNode:
    meta, spec, status = _map(item, "metadata"), _map(item, "spec"), _map(item, "status")
    name = _str(meta, "name")
    if not name:
        raise ShapeError("metadata.name: missing")
    ready_condition = next((c for c in _list(status, "conditions") if _str(c, "type") == "Ready"), None)
    labels = _strings(meta, "labels")
    unschedulable = spec.get("unschedulable")
    if unschedulable is not None and not isinstance(unschedulable, bool):
        raise ShapeError("spec.unschedulable: not a boolean")
    taints = []
    for taint in _list(spec, "taints"):
        key, effect = _str(taint, "key"), _str(taint, "effect")
        if key is None or effect is None:
            raise ShapeError("spec.taints: a taint without key or effect")
        taints.append(
            Taint(key=key, effect=effect, value=_str(taint, "value"), time_added=_stamp(taint, "timeAdded"))
        )
    internal = next(
        (_str(a, "address") for a in _list(status, "addresses") if _str(a, "type") == "InternalIP"), None
    )
    return TargetNode(
        name=name,
        labels=labels,
        annotations=_strings(meta, "annotations"),
        taints=tuple(taints),
        resource_version=_str(meta, "resourceVersion"),
        ready=ready_condition is not None and _str(ready_condition, "status") == "True",
        kubelet_version=_str(_map(status, "nodeInfo"), "kubeletVersion") or "",
        roles=frozenset(k[len(_ROLE_PREFIX) :] for k in labels if k.startswith(_ROLE_PREFIX)),
        internal_ip=internal,
        unschedulable=bool(unschedulable),
        ready_changed_at=_time(ready_condition, "lastTransitionTime")
        if ready_condition is not None
        else None,
    )


def pod(item: Mapping[str, Any]) -> TargetPod | None:
    """The Pod, or None for an item without metadata (as the client's models skipped it)."""
    if item.get("metadata") is None:
        return None
    meta, spec = _map(item, "metadata"), _map(item, "spec")
    namespace, name = _str(meta, "namespace"), _str(meta, "name")
    if namespace is None or name is None:
        raise ShapeError("metadata: a Pod without namespace or name")
    owner = next((r for r in _list(meta, "ownerReferences") if r.get("controller")), None)
    return TargetPod(
        namespace=namespace,
        name=name,
        node=_str(spec, "nodeName"),
        controller_kind=_str(owner, "kind") if owner is not None else None,
        mirror="kubernetes.io/config.mirror" in _strings(meta, "annotations"),
        empty_dir=any(v.get("emptyDir") is not None for v in _list(spec, "volumes")),
        terminating=meta.get("deletionTimestamp") is not None,
    )
