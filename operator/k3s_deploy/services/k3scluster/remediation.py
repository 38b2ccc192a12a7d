"""Remediation (spec.remediation): a node NotReady too long is rebooted through Proxmox, then replaced.

Everything it decides on is read from the world each pass, never kept in memory: how long a node has
been NotReady is its Ready condition's ``lastTransitionTime`` in the cluster's API; that a reboot was
already asked for this outage is the ProxmoxVM's restart annotation (``remediation@<time>``, which the
ProxmoxVM controller turns into a reboot through Proxmox). One timeout after that reboot a node still
NotReady has its ProxmoxVM deleted; the pass clones it again and the member rejoins, as when a VM is
destroyed outside. Only cloned VMs with deletionPolicy Delete are replaced (an adopted or kept VM is
someone else's machine). With more unhealthy nodes than ``maxUnhealthy`` allows nothing is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from k3s_deploy import errors
from k3s_deploy.api.remediation import RemediationRecord, scaled
from k3s_deploy.services.k3scluster import guest_values
from k3s_deploy.services.k3scluster.secrets import KUBECONFIG_KEY, kubeconfig_secret_name
from k3s_deploy.services.k3scluster.state import ClusterPass, as_vm
from k3s_deploy.services.proxmoxvm.work import RESTART_ANNOTATION

CONDITION = "RemediationAllowed"
MARK = "remediation@"
KEEP_RECORDS = 20


@dataclass(frozen=True)
class Candidate:
    name: str
    not_ready_since: datetime | None  # None: Ready (or not known)
    rebooted_at: datetime | None = None  # the last reboot remediation asked for
    replaceable: bool = True


@dataclass
class Plan:
    unhealthy: list[str] = field(default_factory=list)
    reboot: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # rebooted, not yet a timeout ago
    not_replaceable: list[str] = field(default_factory=list)
    blocked: str | None = None


def plan(
    candidates: Sequence[Candidate], *, timeout_s: float, max_unhealthy: int | str, now: datetime
) -> Plan:
    """What to do with each node (pure)."""
    timeout = timedelta(seconds=timeout_s)
    out = Plan()
    unhealthy = [
        c for c in candidates if c.not_ready_since is not None and now - c.not_ready_since >= timeout
    ]
    out.unhealthy = [c.name for c in unhealthy]
    allowed = scaled(max_unhealthy, len(candidates))
    if len(unhealthy) > allowed:
        out.blocked = (
            f"{len(unhealthy)} of {len(candidates)} nodes NotReady for over {int(timeout_s)}s "
            f"({', '.join(out.unhealthy)}); maxUnhealthy {max_unhealthy} allows {allowed}: no remediation"
        )
        return out
    for c in unhealthy:
        assert c.not_ready_since is not None
        if c.rebooted_at is None or c.rebooted_at < c.not_ready_since:
            out.reboot.append(c.name)
        elif now - c.rebooted_at < timeout:
            out.waiting.append(c.name)
        elif c.replaceable:
            out.replace.append(c.name)
        else:
            out.not_replaceable.append(c.name)
    return out


def _rebooted_at(annotations: dict[str, str]) -> datetime | None:
    value = annotations.get(RESTART_ANNOTATION) or ""
    if not value.startswith(MARK):
        return None
    try:
        return datetime.fromisoformat(value[len(MARK) :])
    except ValueError:
        return None


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def remediate(r: ClusterPass, *, now: datetime | None = None) -> None:
    """Look at the nodes and act as the policy says; never fails the pass (problems go to the condition)."""
    policy = r.spec.remediation
    if policy is None:
        r.conditions.remove(CONDITION)
        return
    if r.spec.paused or r.spec.power_state == "Stopped" or r.status.kubeconfig_secret_ref is None:
        return  # hands off while paused (even when the paused pass failed), asleep, or nothing yet
    if r.status.upgrade is not None and r.status.upgrade.state in ("Progressing", "Paused", "Failed"):
        r.conditions.set(CONDITION, False, "RollingOut", "no remediation while a rollout is in progress")
        return
    now = now or datetime.now(UTC)
    try:
        candidates = await _candidates(r)
    except errors.K3sDeployError as exc:
        r.conditions.set(CONDITION, "Unknown", "NodesUnknown", f"cannot read the nodes: {exc.message}")
        return
    decided = plan(
        candidates,
        timeout_s=float(policy.node_not_ready_timeout_seconds),
        max_unhealthy=policy.max_unhealthy,
        now=now,
    )
    if decided.blocked:
        previous = r.conditions.get(CONDITION)
        if previous is None or previous.get("reason") != "TooManyUnhealthy":
            r.event("Warning", "TooManyUnhealthy", decided.blocked)
        r.conditions.set(CONDITION, False, "TooManyUnhealthy", decided.blocked)
        return
    try:
        await _act(r, decided, now)
    except errors.K3sDeployError as exc:
        r.conditions.set(CONDITION, "Unknown", "RemediationFailed", exc.message)


async def _act(r: ClusterPass, decided: Plan, now: datetime) -> None:
    assert r.spec.remediation is not None
    ns = r.ref.namespace
    timeout = r.spec.remediation.node_not_ready_timeout_seconds
    for name in decided.reboot:
        await r.deps.objects.patch_child_annotations(ns, name, {RESTART_ANNOTATION: MARK + _stamp(now)})
        r.event(
            "Warning",
            "RemediationReboot",
            f"Node {name} NotReady for over {timeout}s: rebooting its VM through Proxmox",
        )
        _record(r, name, "Reboot", now)
    for name in decided.replace:
        await r.deps.objects.delete_child(ns, name)
        r.event(
            "Warning",
            "RemediationReplace",
            f"Node {name} still NotReady {timeout}s after its reboot: replacing its VM (a new one is cloned and joins)",
        )
        _record(r, name, "Replace", now)
    for name in decided.not_replaceable:
        r.event(
            "Warning",
            "RemediationSkipped",
            f"Node {name} still NotReady after a reboot; its VM is adopted or kept (deletionPolicy), so it is "
            "not replaced: look at it by hand",
        )
    acted = decided.reboot + decided.replace
    if acted or decided.waiting or decided.not_replaceable:
        parts = [f"rebooted {', '.join(decided.reboot)}"] if decided.reboot else []
        parts += [f"replaced {', '.join(decided.replace)}"] if decided.replace else []
        parts += [f"waiting after a reboot: {', '.join(decided.waiting)}"] if decided.waiting else []
        parts += [f"not replaceable: {', '.join(decided.not_replaceable)}"] if decided.not_replaceable else []
        r.conditions.set(CONDITION, True, "Remediating", "; ".join(parts))
    else:
        r.conditions.set(CONDITION, True, "Healthy", f"no node NotReady for over {timeout}s")


def _record(r: ClusterPass, name: str, action: str, now: datetime) -> None:
    records = [*r.status.remediations, RemediationRecord(node=name, action=action, time=_stamp(now))]
    r.status.remediations = records[-KEEP_RECORDS:]


async def _candidates(r: ClusterPass) -> list[Candidate]:
    secret = await r.deps.objects.read_secret(r.ref.namespace, kubeconfig_secret_name(r.ref.name))
    kubeconfig = (secret or {}).get(KUBECONFIG_KEY)
    if not kubeconfig:
        raise errors.KubeUnavailable(f"Secret {kubeconfig_secret_name(r.ref.name)} has no kubeconfig yet")
    found = {n.name: n for n in guest_values.target_nodes(await r.deps.target.nodes(kubeconfig.decode()))}
    out = []
    for child in await r.deps.objects.list_children(r.ref.namespace, r.ref.name):
        meta = child.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        node = found.get(str(meta.get("name")))
        if node is None:
            continue  # not registered (joining, or its Node deleted): drift repair handles it
        try:
            vm = as_vm(child)
        except errors.PermanentError:
            continue
        since = None if node.ready else node.ready_changed_at
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        out.append(
            Candidate(
                name=node.name,
                not_ready_since=since,
                rebooted_at=_rebooted_at(dict(meta.get("annotations") or {})),
                replaceable=vm.spec.source.clone is not None
                and vm.spec.effective_deletion_policy() == "Delete",
            )
        )
    return out
