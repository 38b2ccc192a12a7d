"""The Secrets a K3sCluster reads (SSH key, user token) and writes (token, kubeconfig)."""

from __future__ import annotations

from k3s_deploy import errors
from k3s_deploy.api.common import CONTROL_CHAR
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.services.cluster_identity import token_secret_name as token_secret_name
from k3s_deploy.services.k3scluster.topology import LABEL_CLUSTER

TOKEN_KEY = "token"  # noqa: S105 - the key name inside the Secret, not a secret
KUBECONFIG_KEY = "value"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "k3s-deploy"


def kubeconfig_secret_name(cluster: str) -> str:
    return f"{cluster}-kubeconfig"


def managed_labels(cluster: str) -> dict[str, str]:
    """Labels on Secrets the operator wrote; only Secrets carrying them are ever overwritten or deleted."""
    return {LABEL_CLUSTER: cluster, MANAGED_BY: MANAGER}


async def read_user_secret(
    objects: ClusterObjects, namespace: str, name: str, *, field: str
) -> dict[str, bytes] | None:
    """The data of a Secret the tenant names in ``field`` (registry auth, S3 keys), bound for the nodes.

    A Secret the operator writes itself (the join token, the kubeconfig, the host-key pins) is refused:
    named as registry auth, the server token would be written into every agent's registries.yaml, and
    agents never hold it (docs/security.md). None when the Secret does not exist.
    """
    found = await objects.read_secret_labelled(namespace, name)
    if found is None:
        return None
    data, labels = found
    if labels.get(MANAGED_BY) == MANAGER:
        raise errors.InvalidSpec(
            f"{field} names Secret {name!r}, which k3s-deploy writes itself (label {MANAGED_BY}={MANAGER}); "
            f"its values never go onto the nodes: create a Secret of your own and name it in {field}",
            reason="SecretRefForbidden",
        )
    return data


def one_line(value: str, *, name: str, key: str, what: str) -> str:
    """A Secret value bound for a guest's command line or files (the join token), as one line.

    Surrounding whitespace (the newline ``kubectl create secret --from-file`` leaves) is dropped; a
    control character inside is refused: a newline would add a line to the K3s service's env file on
    every node. The message names the Secret and key, never the value.
    """
    value = value.strip()
    if CONTROL_CHAR.search(value):
        raise errors.CredentialsError(
            f"key {key!r} of Secret {name!r} ({what}) contains a control character (newline, tab, NUL, "
            "...); store the value on one line",
            reason="SecretInvalid",
        )
    return value


async def read_key(
    objects: ClusterObjects, namespace: str, name: str, key: str, *, what: str, single_line: bool = False
) -> str:
    """One key of a user's Secret as text; missing Secret or key is a permanent error naming both.
    ``single_line``: the value goes to the guests, see :func:`one_line`."""
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
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise errors.CredentialsError(
            f"key {key!r} of Secret {name!r} is not text", reason="SecretInvalid"
        ) from exc
    return one_line(text, name=name, key=key, what=what) if single_line else text
