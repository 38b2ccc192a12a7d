"""Probing the members over SSH, installing K3s where it is missing, and reading the nodes' health
through the cluster's API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import (
    access,
    endpoint,
    etcd_convert,
    guest_values,
    hostkeys,
    install,
    node_ops,
    nodes,
    settling,
)
from k3s_deploy.services.k3scluster.installer_actions import Install
from k3s_deploy.services.k3scluster.state import (
    AGENTS_READY,
    INSTALL_FAILED,
    NODE_WAIT_DELAY,
    SERVERS_READY,
    ClusterPass,
    NodeView,
    fold_errors,
    raise_first,
)


async def probe_all(r: ClusterPass, private_key: str) -> None:
    """Log in to every node (its host key verified, or learned as the policy says) and read
    what runs there; pins learned on the way are saved before anything else runs."""
    timeout = float(r.spec.ssh.connect_timeout_seconds) * 3
    await r.hostkeys.load()

    async def one(view: NodeView) -> None:
        assert view.ip is not None
        try:
            pin = await r.hostkeys.prepare(
                view.name, view.ip, view.vmid, view.pve_node, r.recorded_for(view.name)
            )
            target = access.node_target(r, view, private_key, pin)
            result = await hostkeys.first_contact(
                nodes.probe(r.deps.ssh, view.name, target, timeout_s=timeout), view.name, pin
            )
        except errors.K3sDeployError as exc:
            cause = _refused_for_stale_cloud_init(view, exc)
            view.message = (cause or exc).message
            view.state = "Unreachable" if exc.transient else "Failed"
            if cause is not None:
                raise cause from exc
            if (wait := settling.waiting(view, exc)) is not None:
                view.state, view.message = "Unreachable", str(wait)
                raise wait from exc
            raise
        how = r.hostkeys.confirm(view.name, view.vmid, pin, result.host_public_key)
        hostkeys.report(r.event, view.name, how, pin, result.host_key)
        view.host_key = result.host_key
        view.k3s_version = result.installed_version
        view.server_up = result.server_up
        view.embedded_etcd = result.embedded_etcd
        view.config_digest = result.config_digest
        view.kube_vip_manifest = result.kube_vip_manifest
        view.message = None
        view.state = "Installed" if result.installed_version else "Reachable"

    try:
        outcomes = await asyncio.gather(*(one(v) for v in r.views.values()), return_exceptions=True)
    finally:
        r.hostkeys.forget_others({v.name: v.vmid for v in r.views.values()}, keep=r.surplus)
        await r.hostkeys.save()
        hostkeys.tofu_condition(r.conditions, r.hostkeys)
    waits = [o for o in outcomes if isinstance(o, errors.NotYet)]
    if waits and not fold_errors([o for o in outcomes if not isinstance(o, errors.NotYet)]):
        r.conditions.reconciling(True, waits[0].reason, "; ".join(str(w) for w in waits[:3]))
    _raise_first(outcomes)


def _installed(r: ClusterPass, view: NodeView) -> str | None:
    """The version to plan with: a node whose last install failed, or a server whose K3s never
    came up (no admin kubeconfig), is treated as not installed so it is installed again; one whose
    install is in flight, as not installed yet."""
    recorded = r.recorded.get(view.name)
    if recorded is not None and recorded.state == INSTALL_FAILED:
        return None
    if view.operation is not None and view.operation.kind == "Install":
        return None  # its installer runs (the binary may be there already): seen through to its end
    if view.role == "server" and not view.server_up:
        return None
    return view.k3s_version


async def bootstrap(r: ClusterPass, private_key: str, settings: install.K3sSettings) -> None:
    facts = [install.NodeFacts(v.name, v.role, v.ip, _installed(r, v)) for v in r.views.values()]
    plan = install.plan(facts, settings, init_server=r.old.init_server)
    if r.status.init_server != plan.init_server:
        r.status.init_server = plan.init_server
        await r.flush()
    if not plan.steps:
        await _secure_token(r, private_key)
        return
    r.status.phase = "Bootstrapping"
    r.conditions.reconciling(
        True, "InstallingK3s", "installing K3s on " + ", ".join(s.node for s in plan.steps)
    )
    sans = install.tls_sans(settings, [v.ip for v in r.views.values() if v.role == "server" and v.ip])

    async def one(step: install.InstallStep) -> None:
        """Start the member's installer as a guest job, or look at it (NotYet while it runs)."""
        view = r.views[step.node]
        action = Install(step, settings, private_key, tuple(sans))
        try:
            await node_ops.run_change(r, step.node, action, private_key=private_key)
        except errors.K3sDeployError as exc:
            if not exc.transient:
                view.operation = None  # failed: the next install starts afresh (a transient look keeps it)
            view.state, view.message = (
                (INSTALL_FAILED if not exc.transient else "Unreachable"),
                exc.message,
            )
            raise
        view.state, view.message = "Joined", None
        r.event(
            "Normal",
            "Installed",
            f"K3s {view.k3s_version or ''} installed on {step.node}".replace("  ", " "),
        )

    async def servers_one_by_one() -> None:
        for step in plan.server_joins:
            await one(step)

    async def agents_together() -> None:
        _raise_first(await asyncio.gather(*(one(s) for s in plan.agents), return_exceptions=True))

    await etcd_convert.ensure(r, plan, private_key)
    for step in plan.first:
        try:
            await one(step)
        finally:
            await r.flush()
    if plan.server_joins or plan.agents:
        await endpoint.answers(r, private_key)
    results = await asyncio.gather(servers_one_by_one(), agents_together(), return_exceptions=True)
    await r.flush()
    _raise_first(results)
    await _secure_token(r, private_key)


def _raise_first(results: Sequence[object]) -> None:
    """The most telling failure of parallel installs; else, while some still run, the NotYet that
    looks again soonest (a young job's end is not missed for an old one's pace)."""
    raise_first([x for x in results if not isinstance(x, errors.NotYet)])
    waits = [x for x in results if isinstance(x, errors.NotYet)]
    if waits:
        raise min(waits, key=lambda w: float("inf") if w.after_s is None else w.after_s)


async def _secure_token(r: ClusterPass, private_key: str) -> None:
    """Keep the secure server token once a server runs, even before anything joins (and for a
    cluster bootstrapped with a plain token): one read, then it is in ``<cluster>-token``. Not
    there yet is no reason to hold the cluster back (only joins need it: they wait for it); a
    token file that is there but wrong stalls it."""
    if r.tokens.secure is None and any(v.role == "server" and v.server_up for v in r.views.values()):
        with contextlib.suppress(errors.GuestNotReady):
            await access.join_tokens(r, private_key, for_agents=False)


async def health(r: ClusterPass, kubeconfig: str, settings: install.K3sSettings) -> None:
    """Nodes as the cluster's API reports them; ends the pass (NotYet) until every node is Ready."""
    found = {n.name: n for n in guest_values.target_nodes(await r.deps.target.nodes(kubeconfig))}
    for view in r.views.values():
        node = found.get(view.name)
        if node is None:
            view.ready, view.state = False, "Joining"
            view.message = "not registered in the cluster yet"
            continue
        view.k3s_version = node.kubelet_version or view.k3s_version
        at_version = settings.version is None or node.kubelet_version == settings.version
        view.ready = node.ready and at_version
        view.state = "Ready" if view.ready else "NotReady"
        view.message = (
            None
            if view.ready
            else (
                "node is not Ready"
                if not node.ready
                else f"runs {node.kubelet_version}, wants {settings.version}"
            )
        )
    r.store_nodes()
    if settings.version:
        r.status.resolved_version = settings.version
    elif r.status.k3s_version:
        r.status.resolved_version = r.status.k3s_version
    waiting = []
    for role, cond in (("server", SERVERS_READY), ("agent", AGENTS_READY)):
        views = [v for v in r.views.values() if v.role == role]
        ready = [v for v in views if v.ready]
        label = f"{role}s"
        if len(ready) == len(views):
            r.conditions.set(
                cond, True, f"{role.capitalize()}sReady", f"{len(ready)}/{len(views)} {label} Ready"
            )
        else:
            late = ", ".join(v.name for v in views if not v.ready)
            r.conditions.set(
                cond,
                False,
                "NodesNotReady",
                f"{len(ready)}/{len(views)} {label} Ready; waiting for {late}",
            )
            waiting.append(late)
    if waiting:
        message = "waiting for nodes to be Ready: " + ", ".join(waiting)
        r.conditions.reconciling(True, "WaitingForNodes", message)
        raise errors.NotYet(NODE_WAIT_DELAY, "WaitingForNodes", message)


def _refused_for_stale_cloud_init(view: NodeView, exc: errors.K3sDeployError) -> errors.SshAuthFailed | None:
    """A refused key on a guest that booted with stale cloud-init: the drive is the cause to report."""
    if not isinstance(exc, errors.SshAuthFailed) or view.vm_problem is None:
        return None
    reason, message = view.vm_problem
    return errors.SshAuthFailed(
        f"{exc.message}; its ProxmoxVM reports {reason} ({message}), so the guest likely booted without "
        "the current key: restart the VM to rebuild its cloud-init drive",
        reason=reason,
    )
