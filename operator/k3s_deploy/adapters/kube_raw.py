"""Kubernetes API calls by path through the client's ApiClient, without its generated API classes.

``CoreV1Api`` and ``CustomObjectsApi`` import every model their methods name: about 250 pydantic
model modules, some 20 MiB of the operator's memory, for calls whose bodies are plain JSON here
anyway. The ApiClient still does the connection pool, TLS and authentication (in-cluster token or
kubeconfig), so none of that is redone; only the request is built from a path, and the answer is
the decoded JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
# What the generated CoreV1Api sends for a dict patch of a built-in kind (its client picks it).
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def request(
    api: Any,
    method: str,
    path: str,
    params: Mapping[str, str],
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    content_type: str = JSON,
    timeout: float | None = None,
) -> Any:
    """``method path`` (``{name}`` placeholders filled, quoted, from ``params``); the decoded answer.
    A status outside 2xx raises the client's ``ApiException``, as its generated methods do; ``timeout``
    is their ``_request_timeout`` (seconds)."""
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(
        method=method,
        resource_path=path,
        path_params=dict(params),
        query_params=list((query or {}).items()),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*serialized, _request_timeout=timeout)
    response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return json.loads(response.data) if response.data else None


def custom_object_path(*, name: bool = False, status: bool = False) -> str:
    """The path of a namespaced custom object (or of their list, or of its status subresource)."""
    path = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"
    if name:
        path += "/{name}"
    if status:
        path += "/status"
    return path


def request_or_none(api: Any, method: str, path: str, params: Mapping[str, str], **kwargs: Any) -> Any:
    """:func:`request`, with a missing object (404) as None."""
    try:
        return request(api, method, path, params, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
