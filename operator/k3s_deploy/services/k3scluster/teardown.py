"""Deleting a K3sCluster: children first (each ProxmoxVM applies its own deletion policy, so adopted
VMs are retained by default), then the Secrets this cluster wrote. No garbage collector is assumed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k3s_deploy import errors
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.services.k3scluster.hostkeys import secret_name as hostkeys_secret_name
from k3s_deploy.services.k3scluster.secrets import (
    MANAGED_BY,
    MANAGER,
    kubeconfig_secret_name,
    token_secret_name,
)
from k3s_deploy.services.k3scluster.topology import ClusterRef, owned_by


async def teardown(objects: ClusterObjects, body: Mapping[str, Any]) -> list[str]:
    """Delete owned children; once none is left, delete our Secrets. Returns what was asked to go.

    Raises :class:`~k3s_deploy.errors.NotYet` while children still exist (their finalizers release the VMs).
    """
    meta = body.get("metadata") or {}
    ref = ClusterRef(meta["name"], meta["namespace"], meta["uid"])
    children = [c for c in await objects.list_children(ref.namespace, ref.name) if owned_by(c, ref)]
    actions: list[str] = []
    for child in children:
        name = child["metadata"]["name"]
        if not child["metadata"].get("deletionTimestamp"):
            await objects.delete_child(ref.namespace, name)
            actions.append(f"ProxmoxVM {name}")
    if children:
        raise errors.NotYet(
            2.0,
            "Waiting",
            f"waiting for {len(children)} ProxmoxVM(s) to finish deleting: "
            + ", ".join(c["metadata"]["name"] for c in children[:5]),
        )
    user_token = ((body.get("spec") or {}).get("k3s") or {}).get("tokenSecretRef") or {}
    names = [kubeconfig_secret_name(ref.name)]
    if user_token.get("name") != token_secret_name(ref.name):  # ours also when the user gave the token
        names.append(token_secret_name(ref.name))
    names.append(hostkeys_secret_name(ref.name))
    for name in names:
        if await objects.delete_managed_secret(ref.namespace, name, labels={MANAGED_BY: MANAGER}):
            actions.append(f"Secret {name}")
    return actions
