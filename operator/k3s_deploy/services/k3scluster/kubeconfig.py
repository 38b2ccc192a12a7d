"""Turn the kubeconfig K3s writes on a server into one users can use from outside.

K3s writes ``/etc/rancher/k3s/k3s.yaml`` pointing at ``https://127.0.0.1:6443`` with every name set to
``default``. We point it at a reachable server address (or the user's endpoint) and name the cluster,
context and user after the K3sCluster so several can be merged into one kubeconfig.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from k3s_deploy import errors

K3S_KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"
API_PORT = 6443


def server_url(host: str, port: int = API_PORT) -> str:
    """``https://host:port``, bracketing IPv6 literals; a full URL passes through unchanged."""
    if host.startswith(("https://", "http://")):
        return host
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def rewrite(text: str, *, server: str, name: str) -> str:
    """Return ``text`` with every cluster's server set to ``server`` and names set to ``name``."""
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise errors.K3sInstallFailed("the kubeconfig K3s wrote is not valid YAML") from exc
    if not isinstance(doc, dict) or not doc.get("clusters") or not doc.get("users"):
        raise errors.K3sInstallFailed("the kubeconfig K3s wrote has no cluster or user")
    clusters = doc["clusters"][:1]
    users = doc["users"][:1]
    clusters[0]["name"] = name
    clusters[0].setdefault("cluster", {})["server"] = server
    users[0]["name"] = name
    doc["clusters"] = clusters
    doc["users"] = users
    doc["contexts"] = [{"name": name, "context": {"cluster": name, "user": name}}]
    doc["current-context"] = name
    return str(yaml.safe_dump(doc, sort_keys=False))


def server_of(text: str) -> str | None:
    """The server URL of the first cluster of a kubeconfig, if any."""
    try:
        doc: Any = yaml.safe_load(text)
        return str(doc["clusters"][0]["cluster"]["server"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return None
