"""What a node registers with: its labels and taints, as K3s takes them (pure).

K3s applies ``node-label`` / ``node-taint`` only when a node registers; later changes go through the
cluster's API (:mod:`nodemeta`). The two renderings below are the only place these settings take
their K3s shape, so moving them from installer arguments to a ``config.yaml.d`` file is one call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def label_values(labels: Mapping[str, str]) -> list[str]:
    """``key=value`` in key order (stable, so a rendered file only changes when the spec does)."""
    return [f"{key}={labels[key]}" for key in sorted(labels)]


def args(labels: Mapping[str, str], taints: Sequence[str]) -> list[str]:
    """Installer arguments: ``--node-label k=v`` and ``--node-taint key=value:Effect``."""
    out: list[str] = []
    for label in label_values(labels):
        out += ["--node-label", label]
    for taint in taints:
        out += ["--node-taint", taint]
    return out


def config(labels: Mapping[str, str], taints: Sequence[str]) -> dict[str, Any]:
    """The same as keys of a K3s config file (``/etc/rancher/k3s/config.yaml.d/*.yaml``)."""
    out: dict[str, Any] = {}
    if labels:
        out["node-label"] = label_values(labels)
    if taints:
        out["node-taint"] = list(taints)
    return out
