"""The management-cluster objects a K3sCluster owns: its ProxmoxVM children and its Secrets.

A separate seam from the generic gateway so the K3sCluster services can be tested with an in-memory
fake and the operator's RBAC for these verbs is easy to see. Errors: ``KubeUnavailable`` (transient).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ClusterObjects(Protocol):
    async def list_children(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        """ProxmoxVM objects labelled ``k3sdeploy.io/cluster=<cluster>`` in ``namespace``."""
        ...

    async def list_namespace_vms(self, namespace: str) -> list[dict[str, Any]]:
        """Every ProxmoxVM in ``namespace``, whoever owns it (the addresses they hold are taken)."""
        ...

    async def create_child(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a ProxmoxVM; when it already exists return the existing object."""
        ...

    async def patch_child_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        """Merge-patch a ProxmoxVM's spec."""
        ...

    async def patch_child_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        """Merge annotations into a ProxmoxVM's metadata (a restart request, say)."""
        ...

    async def delete_child(self, namespace: str, name: str) -> None:
        """Delete a ProxmoxVM (a missing one is fine)."""
        ...

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """Decoded data of a Secret, or None when it does not exist."""
        ...

    async def read_secret_labelled(
        self, namespace: str, name: str
    ) -> tuple[dict[str, bytes], dict[str, str]] | None:
        """Decoded data and labels of a Secret, or None when it does not exist."""
        ...

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """The data of a ConfigMap (add-on manifests and chart values), or None when it does not exist."""
        ...

    async def write_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        *,
        labels: Mapping[str, str],
        owner: Mapping[str, Any] | None,
        drop_others: bool = False,
    ) -> bool:
        """Create or update a Secret with ``data`` (keys it does not name are kept, unless
        ``drop_others``: then it holds exactly ``data``); True when something changed.

        An existing Secret without all of ``labels`` belongs to someone else: ``InvalidSpec``, untouched.
        """
        ...

    async def delete_managed_secret(self, namespace: str, name: str, *, labels: Mapping[str, str]) -> bool:
        """Delete a Secret only if it carries every label in ``labels``; True when it was deleted."""
        ...

    async def patch_cluster_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        """Merge-patch the K3sCluster status at once (progress that must survive a crash mid-handler);
        the resourceVersion after the write (None when the answer did not say)."""
        ...
