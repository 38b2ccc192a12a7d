"""Whole-cluster power (the old tool's start/stop on every VM of a cluster), as a pure plan.

``Stopped``: agents shut down first (their workloads stop while the control plane still answers),
servers once every agent is off. ``Running``: servers start first, agents once every server VM runs
and is Ready. The plan says which ``spec.powerState`` each ProxmoxVM child gets now; the ProxmoxVM
controller does the graceful shutdown (ACPI / guest agent, then a hard stop after its timeout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PowerState = Literal["Running", "Stopped"]
Role = Literal["server", "agent"]


@dataclass(frozen=True)
class ChildPower:
    """One member: the power state its spec asks for (None: no child yet) and what Proxmox reports."""

    name: str
    role: Role
    wanted: str | None
    observed: str | None
    ready: bool = False


@dataclass(frozen=True)
class PowerPlan:
    states: dict[str, PowerState]
    settled: bool
    message: str


def plan(want: PowerState, children: Sequence[ChildPower]) -> PowerPlan:
    servers = [c for c in children if c.role == "server"]
    agents = [c for c in children if c.role == "agent"]
    states: dict[str, PowerState] = {}
    if want == "Stopped":
        for c in agents:
            states[c.name] = "Stopped"
        agents_off = all(c.observed == "Stopped" for c in agents)
        for c in servers:
            states[c.name] = "Stopped" if agents_off else _keep(c, default="Stopped")
        off = [c for c in children if c.observed == "Stopped"]
        settled = len(off) == len(children)
        if settled:
            message = f"all {len(children)} VMs are stopped"
        elif not agents_off:
            message = (
                f"stopping agents: {len([c for c in agents if c.observed == 'Stopped'])}/{len(agents)} off"
            )
        else:
            message = (
                f"stopping servers: {len([c for c in servers if c.observed == 'Stopped'])}/{len(servers)} off"
            )
        return PowerPlan(states, settled, message)
    for c in servers:
        states[c.name] = "Running"
    servers_up = all(c.observed == "Running" and c.ready for c in servers)
    for c in agents:
        states[c.name] = "Running" if servers_up else _keep(c, default="Running")
    held = [c.name for c in agents if states[c.name] == "Stopped"]
    settled = not held
    message = "" if settled else f"starting servers first; agents {', '.join(held[:5])} wait"
    return PowerPlan(states, settled, message)


def _keep(child: ChildPower, *, default: PowerState) -> PowerState:
    if child.wanted in ("Running", "Stopped"):
        return "Running" if child.wanted == "Running" else "Stopped"
    return default
