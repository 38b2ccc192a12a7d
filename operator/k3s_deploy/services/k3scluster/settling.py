"""A guest whose VM has only just become ready is still starting, so not answering yet is waiting.

A VM is ready once its guest agent reports an address, but the rest of the first boot goes on: sshd
may not accept connections for a few seconds, and qemu-guest-agent can answer before cloud-init has
generated the SSH host keys. Treated as failures, these made a normal first boot post Warning
Events, and a missing key file even stalled the cluster (``HostKeyUnavailable`` is permanent) until
the next resync. For ``SETTLE_S`` after the ProxmoxVM's Ready condition turned True they are a wait:
the pass ends with :class:`~k3s_deploy.errors.NotYet` (``Reconciling`` keeps the cause as its reason
and says the guest is still starting), looked at again soon (paced by the VM's age,
:mod:`k3s_deploy.services.cadence`), with no Event. Afterwards they are what they were.

Only these three are softened: a changed host key, a refused login or a denied permission is never
a matter of waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime

from k3s_deploy import errors
from k3s_deploy.services.cadence import next_look
from k3s_deploy.services.k3scluster.state import NodeView

SETTLE_S = 120.0  # cloud-init makes the host keys and sshd starts early in the first boot
FLOOR_S, FRACTION, CAP_S = 0.5, 0.25, 10.0
STARTING = (errors.SshUnavailable, errors.GuestNotReady, errors.HostKeyNotGenerated)


def age(view: NodeView, now: datetime | None = None) -> float | None:
    """Seconds since the node's VM became ready, while that is under ``SETTLE_S``; else None."""
    if view.vm_ready_since is None:
        return None
    since = view.vm_ready_since
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - since).total_seconds()
    return max(seconds, 0.0) if seconds < SETTLE_S else None


def waiting(view: NodeView, exc: errors.K3sDeployError, now: datetime | None = None) -> errors.NotYet | None:
    """The wait to end the pass with, when ``exc`` is a guest still starting; else None."""
    seconds = age(view, now)
    if seconds is None or not isinstance(exc, STARTING):
        return None
    after = next_look(seconds, floor=FLOOR_S, fraction=FRACTION, cap=CAP_S)
    return errors.NotYet(
        after,
        exc.reason,
        f"node {view.name}: its VM became ready {seconds:.0f} s ago and the guest is still starting "
        f"({exc.message})",
    )
