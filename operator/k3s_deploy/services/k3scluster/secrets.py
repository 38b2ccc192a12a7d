"""The Secrets a K3sCluster reads (SSH key, user token) and writes (token, kubeconfig)."""

from __future__ import annotations

from k3s_deploy import errors
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.services.k3scluster.topology import LABEL_CLUSTER

TOKEN_KEY = "token"  # noqa: S105 - the key name inside the Secret, not a secret
KUBECONFIG_KEY = "value"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "k3s-deploy"


def token_secret_name(cluster: str) -> str:
    return f"{cluster}-token"


def kubeconfig_secret_name(cluster: str) -> str:
    return f"{cluster}-kubeconfig"


def managed_labels(cluster: str) -> dict[str, str]:
    """Labels on Secrets the operator wrote; only Secrets carrying them are ever overwritten or deleted."""
    return {LABEL_CLUSTER: cluster, MANAGED_BY: MANAGER}


async def read_key(objects: ClusterObjects, namespace: str, name: str, key: str, *, what: str) -> str:
    """One key of a user's Secret as text; missing Secret or key is a permanent error naming both."""
    data = await objects.read_secret(namespace, name)
    if data is None:
        raise errors.CredentialsError(
            f"Secret {name!r} ({what}) not found in namespace {namespace!r}", reason="SecretNotFound"
        )
    raw = data.get(key)
    if not raw:
        raise errors.CredentialsError(
            f"Secret {name!r} ({what}) has no key {key!r} (keys: {', '.join(sorted(data)) or 'none'})",
            reason="SecretKeyMissing",
        )
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise errors.CredentialsError(
            f"key {key!r} of Secret {name!r} is not text", reason="SecretInvalid"
        ) from exc
