"""How soon to look again at something still in progress (a Proxmox task, a booting guest's agent, a
detached job on a guest, a node turning Ready).

A fixed one-second look costs one Proxmox call per second of waiting: 24 task-list reads for one 20 s
clone and 3 s start, most of the calls one lone VM made. The wait so far is the best guess of the
wait still to come, so the next look comes after a share of the time already waited: soon for a
short task (a start ends within seconds and is seen as before), rarer for a long one. A look at
``t`` that finds the work still running comes next at ``t * (1 + fraction)`` at the latest, so the
end is seen at most ``fraction`` of its duration late, and never more than ``cap`` seconds late.
"""

from __future__ import annotations

TASK_FRACTION, TASK_CAP = 0.5, 5.0  # a 20 s clone: 8 looks, not 20; a 3 s start: 3, as before
# A read of a guest agent that does not run yet takes 3 s itself (PVE's guest-ping timeout), so the
# reads are already 5 s apart: 25 s of boot cost 6 reads, now 5.
AGENT_FRACTION, AGENT_CAP = 0.3, 6.0
# A node's job (an install, an upgrade, a settings change) or its WaitReady: the next step of the
# cluster waits on its end (installs run one after another), so the end is seen within a tenth of the
# job's age: a settings job of 2 s within 0.5 s, a 10 s install within 1 s, a 40 s one within the 2 s
# cap (node_ops.POLL_S, the fixed look before). Each look is one reconcile pass.
JOB_FLOOR, JOB_FRACTION = 0.5, 0.1


def next_look(waited: float, *, floor: float, fraction: float, cap: float) -> float:
    """Seconds until the next look after ``waited`` seconds of waiting: at least ``floor``, at most
    ``cap``, else ``fraction`` of the wait so far."""
    return min(cap, max(floor, fraction * max(waited, 0.0)))
