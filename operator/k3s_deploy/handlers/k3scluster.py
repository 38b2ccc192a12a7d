"""kopf handlers for K3sCluster: parse the body, call the services, write status."""

from __future__ import annotations

from typing import Any

import kopf

GROUP = "k3sdeploy.io"
VERSION = "v1alpha1"
PLURAL = "k3sclusters"


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile(meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    """Record which generation was seen; the full reconcile grows from here."""
    patch.setdefault("status", {})["observedGeneration"] = meta.get("generation")
