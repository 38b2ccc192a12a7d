"""A K3sCluster's stable identity: a random id kept in ``<cluster>-token``, not in the object's uid.

A K3sCluster re-applied on another management cluster (a move, a restore from Git) gets a new uid, so
a tag derived from the uid alone would not find its VMs again. The id is written once, with the first
Secret of the cluster, and read back from that Secret on every pass: whoever holds the Secret holds
the cluster's VMs (docs/disaster-recovery.md). The tag is a hash of the id, never a prefix of it: the
tag is visible in Proxmox to anyone who can list VMs, and must not tell how to write a Secret that
derives it (docs/security.md, item 4). An id must be 32 hex digits (128 random bits); a shorter one
could be found from the tag by trying.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

from k3s_deploy.errors import InvalidSpec

CLUSTER_ID_KEY = "clusterId"
_ID = re.compile(r"[0-9a-f]{32}")
_DOMAIN = b"k3s-deploy cluster identity v1\x00"
TAG_PREFIX = "k3sdeploy-"
TAG_HEX = 16


def token_secret_name(cluster: str) -> str:
    """The Secret holding the cluster's join tokens and its id."""
    return f"{cluster}-token"


def new_cluster_id() -> str:
    """128 random bits as 32 lower-case hex digits."""
    return secrets.token_hex(16)


def identity_tag(cluster_id: str) -> str:
    """The Proxmox tag of the VMs of the cluster with this id: a domain-separated hash, 16 hex digits."""
    return TAG_PREFIX + hashlib.sha256(_DOMAIN + cluster_id.encode()).hexdigest()[:TAG_HEX]


def read_cluster_id(data: Mapping[str, bytes] | None, *, secret: str) -> str | None:
    """The id stored in the token Secret's data; None when there is none; refused when malformed."""
    raw = (data or {}).get(CLUSTER_ID_KEY)
    if raw is None:
        return None
    value = raw.decode(errors="replace").strip()
    if not _ID.fullmatch(value):
        raise InvalidSpec(
            f"key {CLUSTER_ID_KEY!r} of Secret {secret!r} is not 32 lower-case hex digits; restore the "
            "value from the backup of this Secret (the VMs are marked with it), or remove the key only "
            "for a cluster that has no VMs yet",
            reason="ClusterIdInvalid",
        )
    return value
