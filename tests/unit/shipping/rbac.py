"""Evaluate rendered RBAC objects the way the apiserver's RBAC authorizer does (no aggregation).

Used by the manifest tests to state what the operator's ServiceAccount may do; the install
integration test checks the same questions against a real apiserver with `kubectl auth can-i`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Grant:
    """One rule reachable by the subject; ``namespace`` None means cluster-wide."""

    namespace: str | None
    rule: Doc


def _matches(values: list[str] | None, wanted: str) -> bool:
    return values is not None and ("*" in values or wanted in values)


def grants_for(docs: list[Doc], namespace: str, service_account: str) -> list[Grant]:
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    out: list[Grant] = []
    for binding in docs:
        if binding["kind"] not in {"RoleBinding", "ClusterRoleBinding"}:
            continue
        subjects = binding.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == service_account
            and s.get("namespace") == namespace
            for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        bound_ns = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role_ns = bound_ns if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        if role is None:
            continue
        out.extend(Grant(bound_ns, rule) for rule in role.get("rules") or [])
    return out


def can(
    grants: list[Grant],
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str | None = None,
    name: str | None = None,
) -> bool:
    """Whether some grant allows ``verb`` on ``group/resource`` (``resource`` may be ``x/status``)."""
    for grant in grants:
        if grant.namespace is not None and grant.namespace != namespace:
            continue
        rule = grant.rule
        if not (_matches(rule.get("apiGroups"), group) and _matches(rule.get("resources"), resource)):
            continue
        if not _matches(rule.get("verbs"), verb):
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        return True
    return False
