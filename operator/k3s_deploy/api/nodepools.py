"""Node templates, pools and what each node registers with: labels and taints.

Kept apart from :mod:`k3scluster` so the pool shape is one small module: the default ``agents`` and
the servers take the same ``nodeLabels`` / ``nodeTaints``; a named pool adds ``name`` and ``replicas``.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import Field

from k3s_deploy.api.common import ApiModel, DeletionPolicy, Rule, SshPublicKey
from k3s_deploy.api.formats import Pattern, cel_string
from k3s_deploy.api.proxmoxvm import CloneSource, CloudInitUser, VMSettings

# Kubernetes label syntax: an optional DNS-subdomain prefix and '/', then a name of at most 63
# characters; a value of at most 63 characters (may be empty).
_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_PREFIX = r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)"
LABEL_KEY_RE = f"{_PREFIX}?{_NAME}"
LABEL_VALUE_RE = r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TAINT_RE = f"{LABEL_KEY_RE}(={LABEL_VALUE_RE})?:({'|'.join(TAINT_EFFECTS)})"
# Pool names become part of child names (<cluster>-<pool>-<i>) and hostnames; the default roles'
# words are taken (<cluster>-server-<i>, <cluster>-agent-<i>).
RESERVED_POOL_NAMES = ("server", "agent")

NodeTaint = Annotated[
    str,
    Pattern(
        TAINT_RE,
        317,
        "is not a taint: key=value:Effect or key:Effect, Effect one of NoSchedule, PreferNoSchedule, "
        "NoExecute (e.g. dedicated=gpu:NoSchedule)",
    ),
]
PoolName = Annotated[
    str,
    Pattern(
        r"[a-z]([-a-z0-9]{0,18}[a-z0-9])?",
        20,
        "must be a DNS label of at most 20 characters: lower-case letters, digits and '-', starting "
        "with a letter",
    ),
]


def _cel(regex: str) -> str:
    return "^(?:" + regex + ")$"


def labels_valid(labels: dict[str, str]) -> bool:
    return all(
        len(k) <= 317
        and re.fullmatch(LABEL_KEY_RE, k) is not None
        and re.fullmatch(LABEL_VALUE_RE, v) is not None
        for k, v in labels.items()
    )


class NodeRegistration(ApiModel):
    """Labels and taints a node gets: passed to K3s when it registers, kept in sync afterwards."""

    node_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        description=(
            "Labels for these nodes (K3s node-label). Set when a node registers and synced on existing "
            "nodes through the cluster's API: a label removed here is removed from the nodes; labels "
            "the operator did not set are never touched."
        ),
        json_schema_extra={"maxProperties": 32},
    )
    node_taints: list[NodeTaint] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Taints for these nodes as key=value:Effect (K3s node-taint), e.g. dedicated=gpu:NoSchedule. "
            "Synced on existing nodes like nodeLabels."
        ),
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.nodeLabels) || self.nodeLabels.all(k, size(k) <= 317 && "
            f"k.matches({cel_string(_cel(LABEL_KEY_RE))}) && "
            f"self.nodeLabels[k].matches({cel_string(_cel(LABEL_VALUE_RE))}))",
            "nodeLabels must be Kubernetes labels: key [prefix/]name (name up to 63 letters, digits, "
            "'-', '_', '.'), value up to 63 of the same, starting and ending with a letter or digit",
            lambda m: labels_valid(m.node_labels),
            field_path=".nodeLabels",
        ),
    )


class NodeTemplate(VMSettings):
    """How each node's VM is made: a ProxmoxVM spec without identity and addresses (those come from
    the cluster: names, vmids and spec.network)."""

    clone: CloneSource = Field(description="Template to clone each node's VM from.")
    cloud_init: CloudInitUser | None = Field(
        default=None, description="Cloud-init user and SSH keys; addresses and DNS come from spec.network."
    )
    deletion_policy: DeletionPolicy = Field(
        default="Delete",
        description="What happens to a node's VM when it is removed: Delete, Stop or Retain.",
    )


class PoolCloudInit(CloudInitUser):
    """Cloud-init user and SSH keys of a pool's VMs (at most 8 keys: with up to 8 pools, the
    apiserver's cost budget for checking every key stays within its limit)."""

    ssh_authorized_keys: list[SshPublicKey] = Field(
        default_factory=list, max_length=8, description="Public keys allowed to log in as the user."
    )


class PoolTemplate(NodeTemplate):
    """A NodeTemplate for a pool's agents."""

    cloud_init: PoolCloudInit | None = Field(
        default=None, description="Cloud-init user and SSH keys; addresses and DNS come from spec.network."
    )
