"""TargetCluster over the official kubernetes client, one ApiClient per kubeconfig (cached by digest).

Requests go by path through that ApiClient (:mod:`.kube_raw`), not through the generated CoreV1Api
and its models; :mod:`.target_json` checks the answers' fields as those models did.

The client is synchronous, so every call runs in a worker thread (asyncio.to_thread). TLS is verified
with the CA inside the kubeconfig. A kubeconfig with anything beyond inline certificates and an https
server is refused before ``kubernetes.config`` sees it: the services build it from a guest's file
through an allow-list already, and this check keeps an exec plugin, token file or file path from
ever being loaded should a caller forget (defence in depth).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Mapping
from typing import Any

import urllib3
import yaml
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from k3s_deploy import errors
from k3s_deploy.adapters import target_json
from k3s_deploy.adapters.kube_raw import STRATEGIC_MERGE_PATCH, request
from k3s_deploy.ports.target import (
    KUBECONFIG_CLUSTER_FIELDS,
    KUBECONFIG_USER_FIELDS,
    NodeMetadataPatch,
    Taint,
    TargetNode,
    TargetPod,
)

_NODE = "/api/v1/nodes/{name}"
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
            except yaml.YAMLError as exc:
                raise _rejected("it is not YAML") from exc
            _check(doc)
            try:
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
            api = self._client(kubeconfig)
            try:
                listing = request(api, "GET", "/api/v1/nodes", {}, timeout=self._timeout)
                return [target_json.node(item) for item in target_json.items(listing)]
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
            except ValueError as exc:  # not JSON, or a field of the wrong type (target_json.ShapeError)
                raise errors.GuestInputRejected(
                    "the cluster's API answered a Node list that is not one "
                    f"({type(exc).__name__}: {str(exc)[:200]}); check what serves the API on the servers",
                    reason="GuestValueInvalid",
                ) from exc

        return await asyncio.to_thread(call)

    # --- day-2 writes: cordon, drain, delete --------------------------------------------------------

    async def _call(
        self, kubeconfig: str, method: str, path: str, params: Mapping[str, str], **kwargs: Any
    ) -> Any:
        """One request (:func:`.kube_raw.request`) in a thread with the error mapping of :meth:`nodes`;
        the decoded answer ({} when empty), None for a missing object (404)."""

        def call() -> Any:
            api = self._client(kubeconfig)
            try:
                answer = request(api, method, path, params, timeout=self._timeout, **kwargs)
                return {} if answer is None else answer
            except ApiException as exc:
                if exc.status == 404:
                    return None
                if exc.status in (401, 403):
                    raise errors.CredentialsError(
                        f"the cluster's API refused the request ({exc.status})", reason="KubeconfigRefused"
                    ) from exc
                if exc.status == 429:
                    raise _TooManyRequests() from exc
                raise errors.KubeUnavailable(f"the cluster's API answered {exc.status}") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise errors.KubeUnavailable(
                    f"the cluster's API does not answer: {type(exc).__name__}"
                ) from exc

        return await asyncio.to_thread(call)

    async def set_unschedulable(self, kubeconfig: str, node: str, unschedulable: bool) -> bool:
        body = {"spec": {"unschedulable": True if unschedulable else None}}
        return await self._patch_node(kubeconfig, node, body)

    async def delete_node(self, kubeconfig: str, node: str) -> bool:
        found = await self._call(kubeconfig, "DELETE", _NODE, {"name": node})
        return found is not None

    async def patch_node_metadata(self, kubeconfig: str, node: str, patch: NodeMetadataPatch) -> bool:
        metadata: dict[str, Any] = {}
        if patch.labels:
            metadata["labels"] = dict(patch.labels)
        if patch.annotations:
            metadata["annotations"] = dict(patch.annotations)
        if patch.resource_version:
            metadata["resourceVersion"] = patch.resource_version
        body: dict[str, Any] = {"metadata": metadata}
        if patch.taints is not None:
            body["spec"] = {"taints": [_taint_body(t) for t in patch.taints]}
        return await self._patch_node(kubeconfig, node, body)

    async def _patch_node(self, kubeconfig: str, node: str, body: dict[str, Any]) -> bool:
        """A strategic merge patch, as the generated client sent a dict patch of a built-in kind."""
        found = await self._call(
            kubeconfig, "PATCH", _NODE, {"name": node}, body=body, content_type=STRATEGIC_MERGE_PATCH
        )
        return found is not None

    async def pods_on(self, kubeconfig: str, node: str) -> list[TargetPod]:
        query = {"fieldSelector": f"spec.nodeName={node}"}
        listing = await self._call(kubeconfig, "GET", "/api/v1/pods", {}, query=query)
        if listing is None:
            return []
        try:
            pods = [target_json.pod(item) for item in target_json.items(listing)]
        except ValueError as exc:
            raise errors.GuestInputRejected(
                f"the cluster's API answered a Pod list that is not one ({str(exc)[:200]})",
                reason="GuestValueInvalid",
            ) from exc
        return [p for p in pods if p is not None]

    async def evict(self, kubeconfig: str, namespace: str, name: str) -> bool:
        """Evict through the policy/v1 Eviction subresource; False while a PodDisruptionBudget refuses
        it (429). A missing Pod counts as evicted."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        path = "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
        try:
            await self._call(kubeconfig, "POST", path, {"namespace": namespace, "name": name}, body=body)
        except _TooManyRequests:
            return False
        return True


def _rejected(why: str) -> errors.CredentialsError:
    return errors.CredentialsError(
        f"the cluster's kubeconfig is not loaded: {why}", reason="KubeconfigRejected"
    )


def _check(doc: Any) -> None:
    """Refuse a kubeconfig that holds more than one cluster/user, a field outside the allow-list
    (exec, auth-provider, token, tokenFile, file paths, proxy-url, insecure-skip-tls-verify, ...), or a
    server that is not https."""
    if not isinstance(doc, dict):
        raise _rejected("it is not a mapping")
    for key, fields in (("clusters", KUBECONFIG_CLUSTER_FIELDS), ("users", KUBECONFIG_USER_FIELDS)):
        entries = doc.get(key)
        if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
            raise _rejected(f"it must hold exactly one entry in {key}")
        inner = entries[0].get(key[:-1])
        if not isinstance(inner, dict):
            raise _rejected(f"its {key[:-1]} entry is malformed")
        extra = sorted(str(k) for k in inner if k not in fields)
        if extra:
            raise _rejected(f"its {key[:-1]} has fields outside the allow-list: {', '.join(extra)[:200]}")
    server = doc["clusters"][0]["cluster"].get("server")
    if not isinstance(server, str) or not server.startswith("https://"):
        raise _rejected("its server is not an https URL")
    for context in doc.get("contexts") or []:
        inner = context.get("context") if isinstance(context, dict) else None
        if not isinstance(inner, dict) or set(inner) - {"cluster", "user", "namespace"}:
            raise _rejected("a context holds fields outside cluster, user and namespace")


class _TooManyRequests(Exception):
    """An eviction refused for now (HTTP 429: a PodDisruptionBudget does not allow it yet)."""


def _taint_body(taint: Taint) -> dict[str, str]:
    out = {"key": taint.key, "effect": taint.effect}
    if taint.value:
        out["value"] = taint.value
    if taint.time_added:
        out["timeAdded"] = taint.time_added
    return out
