"""KubeGateway over the official kubernetes client (synchronous, so run in worker threads).

Requests go by path through the client's ApiClient (:mod:`.kube_raw`), not through its generated API
classes, whose import costs about 20 MiB of models the operator never uses.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from k3s_deploy.adapters.kube_raw import MERGE_PATCH, custom_object_path, request
from k3s_deploy.errors import CredentialsError, K3sDeployError, KubeUnavailable
from k3s_deploy.secrets_mask import redact, redact_status, register_secret_data

T = TypeVar("T")
COMPONENT = "k3s-deploy"


def _load_api_client() -> Any:
    """In-cluster service account first, then the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # kubernetes.config is unannotated
    except ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # kubernetes.config is unannotated
    return client.ApiClient(configuration)


def decode_secret(secret: Any) -> dict[str, bytes]:
    """A Secret's values (a V1Secret or its JSON), registered for masking: every Secret value enters
    the operator here."""
    if isinstance(secret, Mapping):
        encoded, plain = secret.get("data") or {}, secret.get("stringData") or {}
    else:
        encoded, plain = secret.data or {}, secret.string_data or {}
    data = {k: base64.b64decode(v) for k, v in encoded.items()}
    data.update({k: v.encode() for k, v in plain.items()})
    register_secret_data(data)
    return data


def _where(group: str, version: str, plural: str, namespace: str, name: str | None = None) -> dict[str, str]:
    where = {"group": group, "version": version, "plural": plural, "namespace": namespace}
    return where if name is None else {**where, "name": name}


class KubernetesGateway:
    """Secrets, custom-object status and Events; every call bounded by a semaphore."""

    def __init__(self, *, concurrency: int = 8, api_client: Any = None) -> None:
        self._semaphore = asyncio.BoundedSemaphore(concurrency)
        self._api_client = api_client
        self._lock = threading.Lock()

    def _api(self) -> Any:
        with self._lock:
            if self._api_client is None:
                self._api_client = _load_api_client()
            return self._api_client

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        async with self._semaphore:
            try:
                return await asyncio.to_thread(lambda: fn(self._api()))
            except K3sDeployError:
                raise
            except ApiException as exc:
                if exc.status == 403:
                    raise CredentialsError(
                        f"{what}: the operator is not allowed ({exc.reason}); check its RBAC",
                        reason="Forbidden",
                    ) from exc
                raise KubeUnavailable(f"{what}: {exc.status} {exc.reason}") from exc
            except (HTTPError, OSError) as exc:
                raise KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        def read(api: Any) -> dict[str, bytes] | None:
            try:
                secret = request(
                    api,
                    "GET",
                    "/api/v1/namespaces/{namespace}/secrets/{name}",
                    {"namespace": namespace, "name": name},
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return decode_secret(secret)

        return await self._call(f"read Secret {namespace}/{name}", read)

    async def read_object(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        def read(api: Any) -> dict[str, Any] | None:
            try:
                found = request(
                    api, "GET", custom_object_path(name=True), _where(group, version, plural, namespace, name)
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return cast(dict[str, Any], found)

        return await self._call(f"read {plural}/{namespace}/{name}", read)

    async def list_objects(
        self, group: str, version: str, plural: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        def read(api: Any) -> list[dict[str, Any]]:
            listing = request(
                api,
                "GET",
                custom_object_path(),
                _where(group, version, plural, namespace),
                query={"labelSelector": label_selector} if label_selector else None,
            )
            return list(cast(dict[str, Any], listing).get("items", []))

        return await self._call(f"list {plural} in {namespace}", read)

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> str | None:
        def patch(api: Any) -> str | None:
            try:
                answer = request(
                    api,
                    "PATCH",
                    custom_object_path(name=True, status=True),
                    _where(group, version, plural, namespace, name),
                    body={"status": redact_status(status)},
                    content_type=MERGE_PATCH,
                )
            except ApiException as exc:
                if exc.status != 404:  # gone already: nothing left to report on
                    raise
                return None
            return resource_version(answer)

        return await self._call(f"patch status of {plural}/{namespace}/{name}", patch)

    async def patch_annotations(
        self, group: str, version: str, plural: str, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        def patch(api: Any) -> None:
            request(
                api,
                "PATCH",
                custom_object_path(name=True),
                _where(group, version, plural, namespace, name),
                body={"metadata": {"annotations": dict(annotations)}},
                content_type=MERGE_PATCH,
            )

        await self._call(f"annotate {plural}/{namespace}/{name}", patch)

    async def post_event(self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str) -> None:
        meta = involved.get("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved_object = {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'object')}.{uuid.uuid4().hex[:12]}"},
            "involvedObject": {k: v for k, v in involved_object.items() if v is not None},
            "reason": reason,
            "message": redact(message)[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call(
            f"post event {reason}",
            lambda api: request(
                api, "POST", "/api/v1/namespaces/{namespace}/events", {"namespace": namespace}, body=body
            ),
        )


def resource_version(answer: Any) -> str | None:
    """The resourceVersion of an object the apiserver returned (a dict for custom objects)."""
    meta = answer.get("metadata") if isinstance(answer, dict) else None
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return str(version) if version else None
