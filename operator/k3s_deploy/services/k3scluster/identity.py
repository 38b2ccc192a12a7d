"""The cluster's stable id in ``<cluster>-token`` (services.cluster_identity), before any child exists.

Children are created only after the id is in the Secret, so every VM a child clones carries the tag
derived from it. An id the user brought back (the Secret re-applied from a backup) is kept as it is:
that is how a cluster moved to another management cluster finds its VMs again.
"""

from __future__ import annotations

from dataclasses import replace

from k3s_deploy.secrets_mask import register_secret
from k3s_deploy.services.cluster_identity import CLUSTER_ID_KEY, new_cluster_id, read_cluster_id
from k3s_deploy.services.k3scluster.secrets import managed_labels, token_secret_name
from k3s_deploy.services.k3scluster.state import ClusterPass


async def ensure_identity(r: ClusterPass) -> None:
    """Read the id (or write a new one, once) and put it into ``r.ref``."""
    name = token_secret_name(r.ref.name)
    data = await r.deps.objects.read_secret(r.ref.namespace, name)
    found = read_cluster_id(data, secret=name)
    if found is None:
        token_ref = r.spec.k3s.token_secret_ref
        if token_ref is not None and token_ref.name == name:
            return  # the user's own Secret: the operator never writes it; the uid tag stays in use
        found = new_cluster_id()
        await r.deps.objects.write_secret(
            r.ref.namespace,
            name,
            {**(data or {}), CLUSTER_ID_KEY: found.encode()},
            labels=managed_labels(r.ref.name),
            owner=r.ref.owner_reference(),
        )
        r.event("Normal", "ClusterIdCreated", f"Generated the cluster's stable id into Secret {name}")
    register_secret(found)
    r.ref = replace(r.ref, identity=found)
