"""TargetCluster over the official kubernetes client, one ApiClient per kubeconfig (cached by digest).

The client is synchronous, so every call runs in a worker thread (asyncio.to_thread). TLS is verified
with the CA inside the kubeconfig, as K3s wrote it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from k3s_deploy import errors
from k3s_deploy.ports.target import TargetNode

_ROLE_PREFIX = "node-role.kubernetes.io/"
# The kubernetes package is untyped; name the one function we call so mypy sees a plain Any.
_new_client: Any = k8s_config.new_client_from_config_dict


class KubernetesTargetCluster:
    """Reads Nodes of workload clusters; keeps a small cache of clients keyed by kubeconfig digest."""

    def __init__(self, *, request_timeout: float = 10.0, max_clients: int = 64) -> None:
        self._timeout = request_timeout
        self._max = max_clients
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, kubeconfig: str) -> Any:
        digest = hashlib.sha256(kubeconfig.encode()).hexdigest()
        with self._lock:
            found = self._clients.get(digest)
            if found is not None:
                return found
            try:
                doc = yaml.safe_load(kubeconfig)
                api_client = _new_client(doc, persist_config=False)
            except Exception as exc:
                raise errors.CredentialsError(
                    f"the cluster's kubeconfig cannot be loaded: {type(exc).__name__}",
                    reason="KubeconfigInvalid",
                ) from exc
            api_client.configuration.retries = 0
            if len(self._clients) >= self._max:
                self._clients.pop(next(iter(self._clients))).close()
            self._clients[digest] = api_client
            return api_client

    async def nodes(self, kubeconfig: str) -> list[TargetNode]:
        def call() -> list[TargetNode]:
            api = k8s.CoreV1Api(self._client(kubeconfig))
            try:
                listing = api.list_node(_request_timeout=self._timeout)
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise errors.CredentialsError(
                        f"the cluster's API refused the kubeconfig ({exc.status})", reason="KubeconfigRefused"
                    ) from exc
                raise errors.KubeUnavailable(f"the cluster's API answered {exc.status}") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise errors.KubeUnavailable(
                    f"the cluster's API does not answer yet: {type(exc).__name__}"
                ) from exc
            return [_node(item) for item in listing.items or []]

        return await asyncio.to_thread(call)


def _node(item: Any) -> TargetNode:
    conditions = (item.status.conditions if item.status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    info = item.status.node_info if item.status else None
    labels = (item.metadata.labels if item.metadata else None) or {}
    roles = frozenset(k[len(_ROLE_PREFIX) :] for k in labels if k.startswith(_ROLE_PREFIX))
    addresses = (item.status.addresses if item.status else None) or []
    internal = next((a.address for a in addresses if a.type == "InternalIP"), None)
    return TargetNode(
        name=item.metadata.name,
        ready=ready,
        kubelet_version=(info.kubelet_version if info else "") or "",
        roles=roles,
        internal_ip=internal,
        unschedulable=bool(item.spec.unschedulable) if item.spec else False,
    )
