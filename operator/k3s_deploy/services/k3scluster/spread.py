"""The cluster's ``Spread`` condition: whether its VMs got a Proxmox node each, as their placement asked.

Each ProxmoxVM says so when it is placed (its own ``Spread`` condition, see
:mod:`k3s_deploy.services.proxmoxvm.placement`); the cluster sums them up. Not being spread is no
error (the cluster still works, only with less fault tolerance): the condition says what to change and
a Warning Event is posted once when it turns False, but nothing stalls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.proxmoxvm.placement import SPREAD


def report(
    conditions: Conditions,
    children: Iterable[Mapping[str, Any]],
    event: Callable[[Any, str, str], None],
) -> None:
    """Set ``Spread`` from the children's conditions; leave it unset while no child was placed."""
    placed: list[tuple[str, Mapping[str, Any]]] = []
    short: list[tuple[str, Mapping[str, Any]]] = []
    for child in children:
        name = str((child.get("metadata") or {}).get("name", ""))
        for c in (child.get("status") or {}).get("conditions") or []:
            if c.get("type") == SPREAD:
                (short if c.get("status") == "False" else placed).append((name, c))
    if short:
        name, first = short[0]
        reason = str(first.get("reason") or "NotSpread")
        message = f"{len(short)} VM(s) share a Proxmox node with a sibling; ProxmoxVM {name}: {first.get('message')}"
        was = conditions.get(SPREAD)
        if was is None or was.get("status") != "False" or was.get("reason") != reason:
            event("Warning", reason, message)
        conditions.set(SPREAD, False, reason, message)
    elif placed:
        conditions.set(SPREAD, True, "Spread", f"{len(placed)} placed VM(s), each as its placement asks")
