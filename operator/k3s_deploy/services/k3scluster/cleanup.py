"""Clean teardown: K3s is uninstalled from the VMs a deleted cluster leaves behind.

A child whose VM outlives the cluster (``deletionPolicy`` Retain or Stop, adopted VMs by default)
would otherwise keep a dead cluster's server or agent running and retrying its peers. With
``spec.teardown: Uninstall`` (the default) the deletion handler runs K3s's own uninstall script on
each such VM, over SSH with the pinned host key, before the children are deleted. A VM that cannot be
reached (powered off, no address, no pin, SSH down) never holds the deletion for long: it is tried
on a few handler attempts a few seconds apart, then released with a Warning Event saying what to run
by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from k3s_deploy import errors
from k3s_deploy.api.k3scluster import K3sCluster
from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.ports.ssh import guest_text
from k3s_deploy.services.k3scluster import hostkeys
from k3s_deploy.services.k3scluster.access import ssh_target
from k3s_deploy.services.k3scluster.rollout import UNINSTALL
from k3s_deploy.services.k3scluster.secrets import read_key
from k3s_deploy.services.k3scluster.state import Deps, as_vm
from k3s_deploy.services.k3scluster.topology import LABEL_ROLE, ClusterRef, owned_by

# Handler attempts for a VM that cannot be reached before it is released with K3s left on it.
MAX_ATTEMPTS = 3
RETRY_DELAY_S = 5.0
# Upper bound for one uninstall (real K3s: stops the units, removes files; well under a minute).
UNINSTALL_TIMEOUT_S = 120.0
KEPT = ("Retain", "Stop")
_DONE = "k3s-deploy:uninstalled"

EventSink = Callable[[Literal["Normal", "Warning"], str, str], None]


@dataclass(frozen=True)
class _Kept:
    name: str
    role: Literal["server", "agent"]
    vm: ProxmoxVM


class _Unreachable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def kept_children(ref: ClusterRef, children: list[dict[str, Any]]) -> list[_Kept]:
    """Owned children not yet deleting whose VM survives the deletion."""
    out = []
    for child in children:
        meta = child.get("metadata") or {}
        if not owned_by(child, ref) or meta.get("deletionTimestamp"):
            continue
        try:
            vm = as_vm(child)
        except errors.PermanentError:
            continue  # its deletion policy cannot be read: the ProxmoxVM controller reports it
        if vm.spec.effective_deletion_policy() not in KEPT:
            continue
        server = (meta.get("labels") or {}).get(LABEL_ROLE) == "server"
        out.append(_Kept(str(meta["name"]), "server" if server else "agent", vm))
    return out


async def uninstall_kept(deps: Deps, body: Mapping[str, Any], *, attempt: int, event: EventSink) -> None:
    """Uninstall K3s from every kept VM of a deleted cluster (``spec.teardown: Uninstall``).

    Raises :class:`~k3s_deploy.errors.NotYet` while a VM could not be reached and attempts remain;
    after the last attempt each such VM gets an ``UninstallSkipped`` Warning and is released.
    """
    try:
        cluster = K3sCluster.model_validate(dict(body))
    except ValidationError:
        return  # a spec that does not validate names no SSH login: nothing can be uninstalled
    if cluster.spec.teardown != "Uninstall":
        return
    meta = body.get("metadata") or {}
    ref = ClusterRef(meta["name"], meta["namespace"], meta["uid"])
    kept = kept_children(ref, await deps.objects.list_children(ref.namespace, ref.name))
    if not kept:
        return
    key_ref = cluster.spec.ssh.private_key_secret_ref
    try:
        private_key = await read_key(
            deps.objects, ref.namespace, key_ref.name, key_ref.key, what="spec.ssh.privateKeySecretRef"
        )
    except errors.K3sDeployError as exc:
        for k in kept:
            _skipped(event, k, exc.message)
        return
    keys = hostkeys.HostKeys(deps.objects, ref, cluster.spec.ssh)
    await keys.load()
    recorded = {n.name: n for n in cluster.status.nodes}
    results = await asyncio.gather(
        *(_uninstall(deps, cluster, keys, k, recorded.get(k.name), private_key) for k in kept),
        return_exceptions=True,
    )
    waiting = []
    for k, result in zip(kept, results, strict=True):
        if isinstance(result, _Unreachable):
            if attempt + 1 < MAX_ATTEMPTS:
                waiting.append(f"{k.name} ({result.message})")
            else:
                _skipped(event, k, result.message)
        elif isinstance(result, errors.K3sDeployError):
            event("Warning", "UninstallFailed", f"K3s may be left on {k.name}: {result.message}")
        elif isinstance(result, BaseException):
            raise result
        elif result:
            event("Normal", "Uninstalled", f"Uninstalled K3s from {k.name} before releasing its VM")
    if waiting:
        raise errors.NotYet(
            RETRY_DELAY_S,
            "Uninstalling",
            f"retrying the K3s uninstall (attempt {attempt + 2} of {MAX_ATTEMPTS}) on " + ", ".join(waiting),
        )


def _skipped(event: EventSink, k: _Kept, why: str) -> None:
    event(
        "Warning",
        "UninstallSkipped",
        f"K3s left on {k.name} (VM kept by its deletionPolicy): {why}; run {UNINSTALL[k.role]} there by hand",
    )


async def _uninstall(
    deps: Deps,
    cluster: K3sCluster,
    keys: hostkeys.HostKeys,
    k: _Kept,
    recorded: Any,
    private_key: str,
) -> bool:
    """True when K3s was removed now, False when it was not installed; _Unreachable when not tried."""
    status = k.vm.status
    if status.power_state == "Stopped":
        raise _Unreachable("the VM is powered off")
    ip = status.addresses[0] if status.addresses else (recorded.ip if recorded else None)
    vmid = status.vmid or (recorded.vmid if recorded else None)
    if not ip:
        raise _Unreachable("the VM reports no address")
    pin = keys.pin(k.name, ip, vmid, recorded)
    if pin is None:
        raise _Unreachable("no pinned SSH host key to log in with")
    ssh = cluster.spec.ssh
    target = ssh_target(ssh, ip, private_key, pin)
    script = UNINSTALL[k.role]
    command = f"if [ -x {script} ]; then {script} >&2 && echo {_DONE}; fi"
    timeout = min(float(ssh.command_timeout_seconds), UNINSTALL_TIMEOUT_S)
    try:
        result = await deps.ssh.run(target, command, timeout_s=timeout)
    except errors.SshUnavailable as exc:
        raise _Unreachable(exc.message) from None
    if not result.ok:
        raise errors.CommandFailed(
            f"{script} exited {result.exit_status}: {guest_text(result.stderr, 300)}",
            exit_status=result.exit_status,
        )
    return _DONE in result.stdout
