"""Keeping existing nodes' labels and taints as the spec says (K3s applies them only at registration).

The operator remembers what it set in two annotations on each Node (label keys, taint key:Effect).
Each pass adds or corrects what the spec lists, removes what it set before and the spec no longer
lists, and never touches a label or taint it did not set (K3s's, the cloud's, a user's). The diff is
pure (:func:`diff`); :func:`sync` applies it through the cluster's API, guarded by resourceVersion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from k3s_deploy.ports.target import NodeMetadataPatch, Taint, TargetNode
from k3s_deploy.services.k3scluster import guest_values
from k3s_deploy.services.k3scluster.state import ClusterPass

MANAGED_LABELS = "k3sdeploy.io/managed-labels"
MANAGED_TAINTS = "k3sdeploy.io/managed-taints"


def parse_taint(text: str) -> Taint:
    """``key=value:Effect`` or ``key:Effect`` (the spec's format, validated by the schema)."""
    rest, effect = text.rsplit(":", 1)
    key, _, value = rest.partition("=")
    return Taint(key=key, effect=effect, value=value or None)


def _listed(value: str | None) -> set[str]:
    return {item for item in (value or "").split(",") if item}


def _joined(items: set[str]) -> str | None:
    return ",".join(sorted(items)) or None


def diff(node: TargetNode, labels: Mapping[str, str], taints: Sequence[str]) -> NodeMetadataPatch | None:
    """What to change on ``node`` so it carries ``labels`` and ``taints``; None when it does."""
    had_labels = _listed(node.annotations.get(MANAGED_LABELS))
    had_taints = _listed(node.annotations.get(MANAGED_TAINTS))
    label_patch: dict[str, str | None] = {k: v for k, v in labels.items() if node.labels.get(k) != v}
    for key in sorted(had_labels - set(labels)):
        if key in node.labels:
            label_patch[key] = None
    wanted = [parse_taint(t) for t in taints]
    wanted_ids = {t.ident for t in wanted}
    kept = [t for t in node.taints if t.ident not in had_taints and t.ident not in wanted_ids]
    new_taints = kept + wanted
    same = {(t.key, t.value, t.effect) for t in node.taints} == {
        (t.key, t.value, t.effect) for t in new_taints
    }
    annotations: dict[str, str | None] = {}
    for key, now in ((MANAGED_LABELS, _joined(set(labels))), (MANAGED_TAINTS, _joined(wanted_ids))):
        if node.annotations.get(key) != now:
            annotations[key] = now
    if not label_patch and same and not annotations:
        return None
    return NodeMetadataPatch(
        labels=label_patch,
        annotations=annotations,
        taints=None if same else new_taints,
        resource_version=node.resource_version,
    )


def describe(patch: NodeMetadataPatch) -> str:
    """The change for an Event: label keys set or removed, and the new taint list."""
    parts = []
    added = sorted(k for k, v in patch.labels.items() if v is not None)
    removed = sorted(k for k, v in patch.labels.items() if v is None)
    if added:
        parts.append("labels set: " + ", ".join(added))
    if removed:
        parts.append("labels removed: " + ", ".join(removed))
    if patch.taints is not None:
        parts.append("taints now: " + (", ".join(t.ident for t in patch.taints) or "none"))
    return "; ".join(parts) or "bookkeeping annotations"


async def sync(r: ClusterPass, kubeconfig: str) -> None:
    """Bring every registered member's labels and taints to the spec (one Node list, one patch per
    node that differs). A node not registered yet gets them from K3s when it registers."""
    found = {n.name: n for n in guest_values.target_nodes(await r.deps.target.nodes(kubeconfig))}
    for view in r.views.values():
        node = found.get(view.name)
        if node is None:
            continue
        patch = diff(node, view.node_labels, view.node_taints)
        if patch is None:
            continue
        if await r.deps.target.patch_node_metadata(kubeconfig, view.name, patch):
            r.event("Normal", "NodeMetadataSynced", f"Node {view.name}: {describe(patch)}")
