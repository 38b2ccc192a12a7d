"""Create kopf's peering object when it is missing (kubernetes client; run in a worker thread).

The peering object cannot ship in the same `kubectl apply` as its CRD (kubectl maps every object's
kind before creating any CRD), and without it kopf finds no peers and every replica handles objects.
So the operator creates it at start-up; an existing one is left as it is.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from k3s_deploy.adapters.kube import KubernetesGateway
from k3s_deploy.adapters.kube_raw import request

GROUP, VERSION = "kopf.dev", "v1"


def _gv() -> dict[str, str]:
    return {"group": GROUP, "version": VERSION}


def _create(api: Any, name: str, namespace: str | None) -> bool:
    kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}}
    try:
        if namespace is None:
            request(api, "POST", "/apis/{group}/{version}/clusterkopfpeerings", _gv(), body=body)
        else:
            path = "/apis/{group}/{version}/namespaces/{namespace}/kopfpeerings"
            request(api, "POST", path, {**_gv(), "namespace": namespace}, body=body)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


async def create_peering(name: str, namespace: str | None, *, api_client: Any = None) -> bool:
    """Create the peering object (cluster-wide when ``namespace`` is None); False if it existed.
    Errors map as every Kubernetes call does: 403 CredentialsError, others KubeUnavailable."""
    gateway = KubernetesGateway(concurrency=1, api_client=api_client)
    what = f"create the kopf peering object {name} " + (f"in {namespace}" if namespace else "cluster-wide")
    return await gateway._call(what, lambda api: _create(api, name, namespace))
