"""TargetCluster over the official kubernetes client, one ApiClient per kubeconfig (cached by digest).

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
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from k3s_deploy import errors
from k3s_deploy.ports.target import (
    KUBECONFIG_CLUSTER_FIELDS,
    KUBECONFIG_USER_FIELDS,
    NodeMetadataPatch,
    Taint,
    TargetNode,
    TargetPod,
)

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
            except ValueError as exc:  # the client's models refuse the answer (pydantic ValidationError)
                raise errors.GuestInputRejected(
                    "the cluster's API answered a Node list that is not one (the client refused it: "
                    f"{type(exc).__name__}); check what serves the API on the servers",
                    reason="GuestValueInvalid",
                ) from exc
            return [_node(item) for item in listing.items or []]

        return await asyncio.to_thread(call)

    # --- day-2 writes: cordon, drain, delete --------------------------------------------------------

    async def _call(self, kubeconfig: str, fn: Any) -> Any:
        """Run ``fn(CoreV1Api)`` in a thread with the error mapping of :meth:`nodes`; 404 gives None."""

        def call() -> Any:
            api = k8s.CoreV1Api(self._client(kubeconfig))
            try:
                return fn(api)
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
        t = self._timeout
        found = await self._call(kubeconfig, lambda api: api.patch_node(node, body, _request_timeout=t))
        return found is not None

    async def delete_node(self, kubeconfig: str, node: str) -> bool:
        t = self._timeout
        found = await self._call(kubeconfig, lambda api: api.delete_node(node, _request_timeout=t))
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
        t = self._timeout
        found = await self._call(kubeconfig, lambda api: api.patch_node(node, body, _request_timeout=t))
        return found is not None

    async def pods_on(self, kubeconfig: str, node: str) -> list[TargetPod]:
        t = self._timeout
        selector = f"spec.nodeName={node}"
        listing = await self._call(
            kubeconfig,
            lambda api: api.list_pod_for_all_namespaces(field_selector=selector, _request_timeout=t),
        )
        return [_pod(p) for p in (listing.items if listing else []) if p.metadata is not None]

    async def evict(self, kubeconfig: str, namespace: str, name: str) -> bool:
        t = self._timeout
        body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace))
        try:
            await self._call(
                kubeconfig,
                lambda api: api.create_namespaced_pod_eviction(name, namespace, body, _request_timeout=t),
            )
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


def _pod(item: Any) -> TargetPod:
    meta = item.metadata
    owner = next((r for r in meta.owner_references or [] if r.controller), None)
    volumes = (item.spec.volumes if item.spec else None) or []
    return TargetPod(
        namespace=meta.namespace,
        name=meta.name,
        node=item.spec.node_name if item.spec else None,
        controller_kind=owner.kind if owner is not None else None,
        mirror="kubernetes.io/config.mirror" in (meta.annotations or {}),
        empty_dir=any(v.empty_dir is not None for v in volumes),
        terminating=meta.deletion_timestamp is not None,
    )


def _node(item: Any) -> TargetNode:
    conditions = (item.status.conditions if item.status else None) or []
    ready_condition = next((c for c in conditions if c.type == "Ready"), None)
    ready = ready_condition is not None and ready_condition.status == "True"
    info = item.status.node_info if item.status else None
    labels = (item.metadata.labels if item.metadata else None) or {}
    roles = frozenset(k[len(_ROLE_PREFIX) :] for k in labels if k.startswith(_ROLE_PREFIX))
    addresses = (item.status.addresses if item.status else None) or []
    internal = next((a.address for a in addresses if a.type == "InternalIP"), None)
    taints = tuple(
        Taint(key=t.key, effect=t.effect, value=t.value, time_added=_stamp(t.time_added))
        for t in ((item.spec.taints if item.spec else None) or [])
    )
    return TargetNode(
        name=item.metadata.name,
        labels=dict(labels),
        annotations=dict((item.metadata.annotations if item.metadata else None) or {}),
        taints=taints,
        resource_version=item.metadata.resource_version if item.metadata else None,
        ready=ready,
        kubelet_version=(info.kubelet_version if info else "") or "",
        roles=roles,
        internal_ip=internal,
        unschedulable=bool(item.spec.unschedulable) if item.spec else False,
        ready_changed_at=ready_condition.last_transition_time if ready_condition is not None else None,
    )


def _stamp(value: Any) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "strftime") else str(value)


def _taint_body(taint: Taint) -> dict[str, str]:
    out = {"key": taint.key, "effect": taint.effect}
    if taint.value:
        out["value"] = taint.value
    if taint.time_added:
        out["timeAdded"] = taint.time_added
    return out
