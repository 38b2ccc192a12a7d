"""Rolling upgrade planning: given the nodes, the target version and the recorded progress, what next.

Pure functions only; :mod:`k3s_deploy.services.k3scluster.rollout` carries the steps out. The rules:
servers one at a time (etcd changes membership one member at a time and must keep quorum), and only
while every other server is Ready; then agents, ``agentConcurrency`` at a time. Progress lives in
``status.upgrade``; a node already at the target is never upgraded again, and nodes recorded as
in flight are finished before anything new starts, so an operator restarted mid-rollout never has two
servers in flight. ``paused`` stops between batches; a failed node stops the rollout until the spec
changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from k3s_deploy.services.k3scluster import versions

Role = Literal["server", "agent"]
StepKind = Literal["none", "done", "paused", "failed", "wait", "upgrade"]

PROGRESSING, PAUSED, FAILED, COMPLETE = "Progressing", "Paused", "Failed", "Complete"


@dataclass(frozen=True)
class NodeState:
    """One member as the rollout sees it: installed version from SSH, Ready from the cluster's API."""

    name: str
    role: Role
    version: str | None
    ready: bool = True


@dataclass(frozen=True)
class Progress:
    """``status.upgrade`` as a value."""

    to_version: str | None = None
    from_version: str | None = None
    state: str | None = None
    current: tuple[str, ...] = ()
    completed: tuple[str, ...] = ()
    failed_node: str | None = None
    started_time: str | None = None
    finished_time: str | None = None

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Progress:
        raw = raw or {}
        return cls(
            to_version=raw.get("toVersion"),
            from_version=raw.get("fromVersion"),
            state=raw.get("state"),
            current=tuple(raw.get("currentNodes") or ()),
            completed=tuple(raw.get("completedNodes") or ()),
            failed_node=raw.get("failedNode"),
            started_time=raw.get("startedTime"),
            finished_time=raw.get("finishedTime"),
        )

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fromVersion": self.from_version,
            "toVersion": self.to_version,
            "state": self.state,
            "currentNodes": list(self.current),
            "completedNodes": list(self.completed),
            "failedNode": self.failed_node,
            "startedTime": self.started_time,
            "finishedTime": self.finished_time,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Step:
    """What to do now. ``upgrade`` nodes run together; everything else says why nothing runs."""

    kind: StepKind
    nodes: tuple[str, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class Policy:
    agent_concurrency: int = 1
    paused: bool = False
    retry_failed: bool = False


def pending(nodes: Sequence[NodeState], target: str) -> list[NodeState]:
    """Members with K3s installed at another version (members without K3s are the bootstrap's)."""
    return [n for n in nodes if n.version is not None and n.version != target]


def begin(progress: Progress, nodes: Sequence[NodeState], target: str, *, now: str) -> Progress:
    """The progress record for a rollout to ``target``: kept when it is the same rollout, else new.

    A new target forgets completions of the old one, but nodes still in flight stay in ``current`` so
    they are finished (at the new target) before anything else starts. Nothing to do and nothing in
    flight: the record is left as it is (a fresh cluster has no rollout to report).
    """
    if progress.to_version == target:
        return progress
    if not pending(nodes, target) and not progress.current:
        return progress
    return Progress(
        to_version=target,
        from_version=versions.lowest(n.version for n in nodes),
        state=PROGRESSING,
        current=progress.current if progress.state in (PROGRESSING, PAUSED) else (),
        started_time=now,
    )


def next_step(nodes: Sequence[NodeState], target: str, progress: Progress, policy: Policy) -> Step:
    """The next batch of the rollout to ``target`` (``progress`` must come from :func:`begin`)."""
    by_name = {n.name: n for n in nodes}
    todo = pending(nodes, target)
    if progress.state == FAILED and progress.failed_node and not policy.retry_failed:
        return Step(
            "failed",
            (progress.failed_node,),
            f"the upgrade to {target} stopped at node {progress.failed_node}",
        )
    in_flight = tuple(n for n in progress.current if n in by_name)
    if in_flight:
        # Finish what a previous pass (or a previous operator process) started, even when paused:
        # a node left cordoned half-way helps nobody. Never more than one server.
        busy = [n for n in in_flight if by_name[n].role == "server"]
        return Step("upgrade", tuple(busy[:1]) if busy else in_flight, "resuming")
    if not todo:
        finished = progress.to_version == target and progress.state in (PROGRESSING, PAUSED, FAILED)
        return Step("done" if finished else "none")
    if policy.paused:
        return Step("paused", message=f"{len(todo)} node(s) still to upgrade to {target}")
    servers = [n for n in todo if n.role == "server"]
    if servers:
        node = servers[0]
        not_ready = [n.name for n in nodes if n.role == "server" and n.name != node.name and not n.ready]
        if not_ready:
            return Step(
                "wait",
                message=f"waiting for server(s) {', '.join(not_ready)} to be Ready before upgrading {node.name}",
            )
        return Step("upgrade", (node.name,))
    agents = [n.name for n in todo if n.role == "agent"]
    return Step("upgrade", tuple(agents[: max(1, policy.agent_concurrency)]))


def target_version(
    *,
    pinned: str | None,
    channel_version: str | None,
    auto_upgrade: bool,
) -> str | None:
    """The version the cluster should run: the pinned one, or the channel's newest with autoUpgrade."""
    if pinned:
        return pinned
    if auto_upgrade and channel_version:
        return channel_version
    return None
