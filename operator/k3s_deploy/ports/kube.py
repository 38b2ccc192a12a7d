"""The management-cluster calls the services make besides what kopf does itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class KubeGateway(Protocol):
    """Read Secrets and custom objects, patch status, post Events. Errors: KubeUnavailable (transient)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """The Secret's decoded data, or None when it does not exist."""
        ...

    async def read_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """A custom object as the apiserver has it now, or None when it does not exist."""
        ...

    async def list_objects(
        self, group: str, version: str, plural: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """The custom objects of ``namespace`` matching ``label_selector`` (as the apiserver has them)."""
        ...

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> str | None:
        """Merge-patch the status subresource of a custom object; the object's resourceVersion after
        the write (None when it is gone or the answer did not say)."""
        ...

    async def patch_annotations(
        self, group: str, version: str, plural: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        """Merge-patch annotations of a custom object (markers such as a handled restart request)."""
        ...

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        """Record an Event on the object (``involved`` is its body or a reference)."""
        ...
