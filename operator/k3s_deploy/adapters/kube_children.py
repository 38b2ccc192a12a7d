"""ClusterObjects over the official kubernetes client (sync, so run in worker threads)."""

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
from k3s_deploy.secrets_mask import redact_status

GROUP = "k3sdeploy.io"
VERSION = "v1alpha1"
LABEL_CLUSTER = "k3sdeploy.io/cluster"

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

    def _custom(self) -> Any:
        return k8s.CustomObjectsApi(self._client())

    def _core(self) -> Any:
        return k8s.CoreV1Api(self._client())

    async def list_children(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        return await self._list_vms(namespace, f"{LABEL_CLUSTER}={cluster}")

    async def list_namespace_vms(self, namespace: str) -> list[dict[str, Any]]:
        return await self._list_vms(namespace, "")

    async def _list_vms(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        def fn() -> list[dict[str, Any]]:
            listing = self._custom().list_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "proxmoxvms",
                label_selector=label_selector,
                _request_timeout=self._timeout,
            )
            return list(listing.get("items", []))

        return await self._call("list ProxmoxVMs", fn)

    async def create_child(self, body: Mapping[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        name = body["metadata"]["name"]

        def fn() -> dict[str, Any]:
            api = self._custom()
            try:
                created: dict[str, Any] = api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "proxmoxvms", dict(body), _request_timeout=self._timeout
                )
                return created
            except ApiException as exc:
                if exc.status != 409:
                    raise
                existing: dict[str, Any] = api.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "proxmoxvms", name, _request_timeout=self._timeout
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
            self._custom().patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "proxmoxvms", name, body, _request_timeout=self._timeout
            )

        await self._call(f"{verb} ProxmoxVM {name}", fn)

    async def delete_child(self, namespace: str, name: str) -> None:
        def fn() -> None:
            try:
                self._custom().delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, "proxmoxvms", name, _request_timeout=self._timeout
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

        await self._call(f"delete ProxmoxVM {name}", fn)

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        found = await self._read_core(
            f"read Secret {name}",
            lambda: self._core().read_namespaced_secret(name, namespace, _request_timeout=self._timeout),
        )
        return None if found is None else decode_secret(found)

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        found = await self._read_core(
            f"read ConfigMap {name}",
            lambda: self._core().read_namespaced_config_map(name, namespace, _request_timeout=self._timeout),
        )
        return None if found is None else {str(k): str(v) for k, v in (found.data or {}).items()}

    async def _read_core(self, what: str, read: Callable[[], Any]) -> Any:
        """One core-API read; a missing object is None."""

        def fn() -> Any:
            try:
                return read()
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return await self._call(what, fn)

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
            core = self._core()
            try:
                current = core.read_namespaced_secret(name, namespace, _request_timeout=self._timeout)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
                if owner is not None:
                    metadata["ownerReferences"] = [dict(owner)]
                core.create_namespaced_secret(
                    namespace,
                    {"metadata": metadata, "type": "Opaque", "data": encoded},
                    _request_timeout=self._timeout,
                )
                return True
            have = (current.metadata.labels if current.metadata else None) or {}
            if any(have.get(k) != v for k, v in labels.items()):
                raise errors.InvalidSpec(
                    f"Secret {name!r} exists but was not written by k3s-deploy for this cluster; "
                    "rename or delete it",
                    reason="SecretConflict",
                )
            have_data = current.data or {}
            # a merge patch keeps keys it does not name: null them when only ``data`` may stay
            gone: dict[str, str | None] = (
                {k: None for k in have_data if k not in encoded} if drop_others else {}
            )
            if not gone and all(have_data.get(k) == v for k, v in encoded.items()):
                return False
            patch = {"data": {**encoded, **gone}}
            core.patch_namespaced_secret(name, namespace, patch, _request_timeout=self._timeout)
            return True

        return await self._call(f"write Secret {name}", fn)

    async def delete_managed_secret(self, namespace: str, name: str, *, labels: Mapping[str, str]) -> bool:
        def fn() -> bool:
            core = self._core()
            try:
                current = core.read_namespaced_secret(name, namespace, _request_timeout=self._timeout)
                have = (current.metadata.labels if current.metadata else None) or {}
                if any(have.get(k) != v for k, v in labels.items()):
                    return False
                core.delete_namespaced_secret(name, namespace, _request_timeout=self._timeout)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        return await self._call(f"delete Secret {name}", fn)

    async def patch_cluster_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        def fn() -> str | None:
            answer = self._custom().patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                "k3sclusters",
                name,
                {"status": redact_status(status)},
                _request_timeout=self._timeout,
            )
            return resource_version(answer)

        return await self._call(f"patch K3sCluster {name} status", fn)


def _message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message", exc.reason))
    except ValueError:
        return str(exc.reason)
