"""ClusterObjects over the official kubernetes client (sync, so run in worker threads).

Requests go by path through the client's ApiClient (:mod:`.kube_raw`): its generated API classes
would import some 250 model modules for bodies that are plain JSON here.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from k3s_deploy import errors
from k3s_deploy.adapters.kube import decode_secret, resource_version
from k3s_deploy.adapters.kube_raw import (
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    custom_object_path,
    request,
    request_or_none,
)
from k3s_deploy.secrets_mask import redact_status

GROUP = "k3sdeploy.io"
VERSION = "v1alpha1"
LABEL_CLUSTER = "k3sdeploy.io/cluster"
SECRETS = "/api/v1/namespaces/{namespace}/secrets"
SECRET = SECRETS + "/{name}"
CONFIG_MAP = "/api/v1/namespaces/{namespace}/configmaps/{name}"

T = TypeVar("T")

_load_incluster: Any = k8s_config.load_incluster_config
_new_client: Any = k8s_config.new_client_from_config


def default_api_client() -> Any:
    """In-cluster credentials when running in a Pod, else the current kubeconfig (as kopf does)."""
    try:
        configuration = k8s.Configuration()
        _load_incluster(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    except k8s_config.ConfigException:
        return _new_client()


class KubeClusterObjects:
    def __init__(self, api_client: Any | None = None, *, request_timeout: float = 30.0) -> None:
        self._api_client = api_client
        self._timeout = request_timeout

    def _client(self) -> Any:
        if self._api_client is None:
            self._api_client = default_api_client()
        return self._api_client

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        def run() -> T:
            try:
                return fn()
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise errors.CredentialsError(
                        f"{what}: the management cluster refused the operator ({exc.status}); check its RBAC",
                        reason="Forbidden",
                    ) from exc
                if exc.status == 422 or exc.status == 400:
                    raise errors.InvalidSpec(f"{what}: rejected: {_message(exc)}") from exc
                raise errors.KubeUnavailable(f"{what}: {exc.status} {_message(exc)}") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise errors.KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

        return await asyncio.to_thread(run)

    def _request(self, method: str, path: str, params: Mapping[str, str], **kwargs: Any) -> Any:
        return request(self._client(), method, path, params, timeout=self._timeout, **kwargs)

    async def list_children(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        return await self._list_vms(namespace, f"{LABEL_CLUSTER}={cluster}")

    async def list_namespace_vms(self, namespace: str) -> list[dict[str, Any]]:
        return await self._list_vms(namespace, "")

    async def _list_vms(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        def fn() -> list[dict[str, Any]]:
            listing = self._request(
                "GET",
                custom_object_path(),
                _vms(namespace),
                query={"labelSelector": label_selector} if label_selector else None,
            )
            return list(listing.get("items", []))

        return await self._call("list ProxmoxVMs", fn)

    async def create_child(self, body: Mapping[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        name = body["metadata"]["name"]

        def fn() -> dict[str, Any]:
            try:
                created: dict[str, Any] = self._request(
                    "POST", custom_object_path(), _vms(namespace), body=dict(body)
                )
                return created
            except ApiException as exc:
                if exc.status != 409:
                    raise
                existing: dict[str, Any] = self._request(
                    "GET", custom_object_path(name=True), _vms(namespace, name)
                )
                return existing

        return await self._call(f"create ProxmoxVM {name}", fn)

    async def patch_child_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        await self._patch_child(namespace, name, {"spec": dict(spec)}, "patch")

    async def patch_child_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        await self._patch_child(namespace, name, {"metadata": {"annotations": dict(annotations)}}, "annotate")

    async def _patch_child(self, namespace: str, name: str, body: dict[str, Any], verb: str) -> None:
        def fn() -> None:
            path = custom_object_path(name=True)
            self._request("PATCH", path, _vms(namespace, name), body=body, content_type=MERGE_PATCH)

        await self._call(f"{verb} ProxmoxVM {name}", fn)

    async def delete_child(self, namespace: str, name: str) -> None:
        def fn() -> None:
            request_or_none(
                self._client(),
                "DELETE",
                custom_object_path(name=True),
                _vms(namespace, name),
                timeout=self._timeout,
            )

        await self._call(f"delete ProxmoxVM {name}", fn)

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        found = await self.read_secret_labelled(namespace, name)
        return None if found is None else found[0]

    async def read_secret_labelled(
        self, namespace: str, name: str
    ) -> tuple[dict[str, bytes], dict[str, str]] | None:
        found = await self._call(f"read Secret {name}", lambda: self._read(SECRET, namespace, name))
        if found is None:
            return None
        labels = (found.get("metadata") or {}).get("labels") or {}
        return decode_secret(found), {str(k): str(v) for k, v in labels.items()}

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        found = await self._call(f"read ConfigMap {name}", lambda: self._read(CONFIG_MAP, namespace, name))
        return None if found is None else {str(k): str(v) for k, v in (found.get("data") or {}).items()}

    def _read(self, path: str, namespace: str, name: str) -> Any:
        """One core-API read; a missing object is None."""
        where = {"namespace": namespace, "name": name}
        return request_or_none(self._client(), "GET", path, where, timeout=self._timeout)

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
        encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}

        def fn() -> bool:
            current = self._read(SECRET, namespace, name)
            if current is None:
                metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
                if owner is not None:
                    metadata["ownerReferences"] = [dict(owner)]
                body = {"metadata": metadata, "type": "Opaque", "data": encoded}
                self._request("POST", SECRETS, {"namespace": namespace}, body=body)
                return True
            if not _labelled(current, labels):
                raise errors.InvalidSpec(
                    f"Secret {name!r} exists but was not written by k3s-deploy for this cluster; "
                    "rename or delete it",
                    reason="SecretConflict",
                )
            have_data = current.get("data") or {}
            # a merge patch keeps keys it does not name: null them when only ``data`` may stay
            gone: dict[str, str | None] = (
                {k: None for k in have_data if k not in encoded} if drop_others else {}
            )
            if not gone and all(have_data.get(k) == v for k, v in encoded.items()):
                return False
            patch = {"data": {**encoded, **gone}}
            where = {"namespace": namespace, "name": name}
            self._request("PATCH", SECRET, where, body=patch, content_type=STRATEGIC_MERGE_PATCH)
            return True

        return await self._call(f"write Secret {name}", fn)

    async def delete_managed_secret(self, namespace: str, name: str, *, labels: Mapping[str, str]) -> bool:
        def fn() -> bool:
            current = self._read(SECRET, namespace, name)
            if current is None or not _labelled(current, labels):
                return False
            try:
                self._request("DELETE", SECRET, {"namespace": namespace, "name": name})
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        return await self._call(f"delete Secret {name}", fn)

    async def patch_cluster_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        def fn() -> str | None:
            where = {
                "group": GROUP,
                "version": VERSION,
                "namespace": namespace,
                "plural": "k3sclusters",
                "name": name,
            }
            answer = self._request(
                "PATCH",
                custom_object_path(name=True, status=True),
                where,
                body={"status": redact_status(status)},
                content_type=MERGE_PATCH,
            )
            return resource_version(answer)

        return await self._call(f"patch K3sCluster {name} status", fn)


def _vms(namespace: str, name: str | None = None) -> dict[str, str]:
    where = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": "proxmoxvms"}
    return where if name is None else {**where, "name": name}


def _labelled(found: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether an object read as JSON carries every one of ``labels``."""
    have = (found.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message", exc.reason))
    except ValueError:
        return str(exc.reason)
