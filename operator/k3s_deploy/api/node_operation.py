"""Long work on one node, recorded in status instead of awaited inside a pass (issue 16).

A pass starts a step, writes it here and returns; later passes look at it again (pods gone, the
detached installer's exit code, the node Ready) until the step is done or its time is up. An operator
restarted half-way resumes from this record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from k3s_deploy.api.common import StatusModel

# The step a node is in. Install (a first install: nothing to drain), Convert (a lone server's restart
# into embedded etcd before servers join it) and Upgrade, Reconfigure (between Drain and WaitReady) are
# changes run on the guest.
OperationKind = Literal["Drain", "Install", "Convert", "Upgrade", "Reconfigure", "WaitReady"]


class NodeOperation(StatusModel):
    """The step of long work a node is in, and when it started."""

    kind: OperationKind = Field(
        description="The step: Drain, the change (Install, Convert, Upgrade, Reconfigure) or WaitReady."
    )
    action: str = Field(
        max_length=32,
        description="The change this work applies to the node (Install, Convert, Upgrade, Reconfigure).",
    )
    target: str | None = Field(
        default=None, max_length=128, description="What the change brings the node to (a K3s version)."
    )
    started_time: datetime = Field(description="When the step started; its timeout counts from here.")
    timeout_seconds: int = Field(ge=0, description="How long the step may take before it fails.")
    attempt: int = Field(default=1, ge=1, description="How many times this work was started on the node.")
    job: str | None = Field(
        default=None,
        max_length=128,
        description="The detached job on the guest running the change (its exit code is read later).",
    )
    evicted: int | None = Field(default=None, ge=0, description="Pods evicted by the drain so far.")
