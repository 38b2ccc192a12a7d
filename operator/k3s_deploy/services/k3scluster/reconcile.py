"""One reconcile pass of a K3sCluster: VMs -> addresses -> SSH -> K3s -> kubeconfig -> health.

Every pass starts from what exists (children, status, the nodes themselves) and does only what is
missing, so a pass can be interrupted anywhere and simply run again. The outcome carries the full
status to write, the Events to post and when to look again; the handler does the writing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from k3s_deploy import errors
from k3s_deploy.api.k3scluster import K3sCluster
from k3s_deploy.ports.artefacts import ArtefactFetcher
from k3s_deploy.ports.channels import ChannelServer
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.ports.proxmox import ProxmoxClient, ProxmoxCredentials, VmSummary
from k3s_deploy.ports.ssh import SshRunner, SshTarget
from k3s_deploy.ports.target import TargetCluster
from k3s_deploy.secrets_mask import redact
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.k3scluster import (
    airgap,
    day2,
    guest_values,
    hostkeys,
    install,
    ipam,
    nodes,
    spread,
    tokens,
)
from k3s_deploy.services.k3scluster.desired import Desired, plan, spec_drift
from k3s_deploy.services.k3scluster.kubeconfig import sanitise, server_url
from k3s_deploy.services.k3scluster.secrets import (
    KUBECONFIG_KEY,
    TOKEN_KEY,
    kubeconfig_secret_name,
    managed_labels,
    read_key,
    token_secret_name,
)
from k3s_deploy.services.k3scluster.topology import ClusterRef
from k3s_deploy.services.proxmoxvm.work import AGENT_READY, CLOUD_INIT_STALE

VMS_READY = "VMsReady"
SERVERS_READY = "ServersReady"
AGENTS_READY = "AgentsReady"
STEPS = (VMS_READY, SERVERS_READY, AGENTS_READY)

# How soon to look again while waiting for something that is on its way (VMs booting: children
# changing also wake the loop at once, so this is a fallback).
WAIT_DELAY = 3.0
# Nodes register and turn Ready within seconds of an install; a Node list is one cheap call.
NODE_WAIT_DELAY = 1.0
# Node state recorded when its install failed: the next pass installs it again.
INSTALL_FAILED = "InstallFailed"


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Deps:
    objects: ClusterObjects
    ssh: SshRunner
    target: TargetCluster
    # Lists the VMs a credential sees (for discovery by tags); the runtime shares its cached inventory.
    list_vms: Callable[[ProxmoxCredentials], Awaitable[list[VmSummary]]] | None = None
    # The Proxmox client of a credential (host keys read through the guest agent).
    proxmox: Callable[[ProxmoxCredentials], ProxmoxClient] | None = None
    # The K3s release channel server (version check, channel upgrades); None: no version check.
    channels: ChannelServer | None = None
    channel_check_seconds: float = 600.0
    # Downloads air-gap artefacts for installSource.airGap.fetchFrom: Operator.
    artefacts: ArtefactFetcher | None = None
    # Pool addresses chosen by passes of this process whose children may not exist yet (shared by all).
    addresses: ipam.Claims = field(default_factory=ipam.Claims)


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    error: errors.K3sDeployError | None = None
    # True when the pass wrote status midway: the stored status is no longer the previous outcome.
    flushed: bool = False


@dataclass
class _NodeView:
    name: str
    role: Literal["server", "agent"]
    adopted: bool
    vmid: int | None = None
    pve_node: str | None = None
    ip: str | None = None
    vm_ready: bool = False
    host_key: str | None = None
    k3s_version: str | None = None
    ready: bool = False
    server_up: bool = False
    state: str = "Pending"
    message: str | None = None
    # why the child VM holds the node back, said the way the ProxmoxVM says it (e.g. stale cloud-init)
    vm_problem: tuple[str, str] | None = None  # (reason, message)

    def as_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "vm": self.name,
            "vmid": self.vmid,
            "pveNode": self.pve_node,
            "ip": self.ip,
            "k3sVersion": self.k3s_version,
            "ready": self.ready,
            "hostKeyFingerprint": self.host_key,
            "adopted": self.adopted,
            "state": self.state,
            "message": self.message,
        }
        return {k: v for k, v in out.items() if v is not None}


class Reconciler:
    """State of one pass. Use :func:`reconcile`."""

    def __init__(self, body: Mapping[str, Any], deps: Deps, *, generation: int | None) -> None:
        self.model = K3sCluster.model_validate(dict(body))
        meta = body.get("metadata") or {}
        self.ref = ClusterRef(meta["name"], meta["namespace"], meta["uid"])
        self.spec = self.model.spec
        self.deps = deps
        self.old_status: dict[str, Any] = dict(body.get("status") or {})
        self.status: dict[str, Any] = {k: v for k, v in self.old_status.items() if k != "conditions"}
        self.conditions = Conditions(self.old_status.get("conditions"), generation=generation)
        self.generation = generation
        self.events: list[Event] = []
        self.views: dict[str, _NodeView] = {}
        self.recorded = {n.get("name"): n for n in self.old_status.get("nodes") or [] if n.get("name")}
        self.day2 = day2.Day2(self)
        self.flushed = False
        agent = self._proxmox_client if deps.proxmox is not None else None
        self.hostkeys = hostkeys.HostKeys(deps.objects, self.ref, self.spec.ssh, agent=agent)
        self.tokens = tokens.JoinTokens(server="")
        self.agent_token_checked = False

    # --- helpers -----------------------------------------------------------------------------------

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def _store_nodes(self) -> None:
        self.status["nodes"] = [v.as_status() for v in self.views.values()] + self.day2.leaving()
        servers = [v for v in self.views.values() if v.role == "server"]
        agents = [v for v in self.views.values() if v.role == "agent"]
        self.status["readyServers"] = sum(v.ready for v in servers)
        self.status["readyAgents"] = sum(v.ready for v in agents)
        versions = sorted({v.k3s_version for v in self.views.values() if v.k3s_version}, key=_version_key)
        if versions:
            self.status["k3sVersion"] = versions[0]

    async def _flush(self) -> None:
        """Write progress that must survive an operator crash before the next risky step."""
        self._store_nodes()
        self._summarize()
        self.flushed = True
        await self.deps.objects.patch_cluster_status(self.ref.namespace, self.ref.name, self.status)

    def _summarize(self) -> None:
        """Step conditions and Ready as the nodes about to be written show them: a role whose nodes are
        not all listed and Ready is not Ready, whatever an earlier pass concluded."""
        listed = [n for n in self.status.get("nodes") or [] if n.get("state") != "Removing"]
        for role, cond in (("server", SERVERS_READY), ("agent", AGENTS_READY)):
            if not self.conditions.is_true(cond):
                continue
            mine = [n for n in listed if n.get("role") == role]
            want = self.status.get(f"desired{role.capitalize()}s", len(mine))
            late = [str(n.get("name")) for n in mine if not n.get("ready")]
            ready = len(mine) - len(late)
            if late or ready < want:
                waiting = ", ".join(late) or f"{want - ready} more {role}(s) to join"
                self.conditions.set(
                    cond, False, "NodesNotReady", f"{ready}/{want} {role}s Ready; waiting for {waiting}"
                )
        plan = self.day2.power_plan
        if self.spec.power_state == "Stopped" and plan is not None and plan.settled:
            # stopped as the spec asks: the desired state, so Ready (kstatus Current, Argo CD Healthy)
            self.conditions.summarize_ready((), ready_reason="Stopped", ready_message=plan.message)
        else:
            self.conditions.summarize_ready(STEPS, ready_message=self._ready_message())
        self.status["conditions"] = self.conditions.as_list()

    # --- steps ---------------------------------------------------------------------------------------

    async def _credentials(self) -> ProxmoxCredentials:
        from k3s_deploy.services.proxmoxvm.credentials import parse_credentials

        secret = self.spec.credentials_ref.name
        data = await self.deps.objects.read_secret(self.ref.namespace, secret)
        if data is None:
            raise errors.CredentialsError(
                f"Secret {secret!r} (spec.credentialsRef) not found in namespace {self.ref.namespace!r}",
                reason="SecretNotFound",
            )
        return parse_credentials(
            secret,
            data,
            fingerprint=self.spec.fingerprint,
            insecure_skip_tls_verify=self.spec.insecure_skip_tls_verify,
        )

    async def _proxmox_client(self) -> ProxmoxClient:
        assert self.deps.proxmox is not None
        return self.deps.proxmox(await self._credentials())

    async def _discovered(self) -> list[VmSummary] | None:
        d = self.spec.discovery
        if d is None or d.tags is None:
            return None
        if self.deps.list_vms is None:
            raise errors.InvalidSpec("discovery by tags needs a Proxmox connection", reason="NoProxmox")
        return await self.deps.list_vms(await self._credentials())

    async def ensure_children(self) -> Desired:
        existing = {c["metadata"]["name"]: c for c in await self.deps.objects.list_children(*self._ns_name())}
        discovered = await self._discovered()
        want = await plan(
            self.ref,
            self.spec,
            objects=self.deps.objects,
            claims=self.deps.addresses,
            children=existing.values(),
            discovered_vms=discovered,
        )
        self.status["ipAllocations"] = dict(want.static_ips)  # a cache: the children's specs are the record
        self.status["desiredServers"] = sum(m.role == "server" for m in want.members)
        self.status["desiredAgents"] = sum(m.role == "agent" for m in want.members)
        if self.status["desiredServers"] == 0:
            raise errors.InvalidSpec(
                "discovery found no server VM: tag at least one VM with every tag in spec.discovery.tags.servers",
                reason="NoServersFound",
            )
        self.day2.prepare_children(want, existing)
        for member in want.members:
            manifest = want.manifests[member.name]
            child = existing.get(member.name)
            if child is None:
                child = await self.deps.objects.create_child(manifest)
                verb = "Adopting" if member.adopted else "Creating"
                self.event("Normal", "VMCreated", f"{verb} ProxmoxVM {member.name} ({member.role})")
                existing[member.name] = child
            else:
                refs = child.get("metadata", {}).get("ownerReferences") or []
                if not any(r.get("uid") == self.ref.uid for r in refs):
                    raise errors.InvalidSpec(
                        f"ProxmoxVM {member.name} exists but belongs to something else; rename or delete it",
                        reason="NameConflict",
                    )
                drift = spec_drift(manifest["spec"], child.get("spec") or {})
                if drift:
                    await self.deps.objects.patch_child_spec(self.ref.namespace, member.name, drift)
                    self.event(
                        "Normal", "VMUpdated", f"Updated ProxmoxVM {member.name}: {', '.join(sorted(drift))}"
                    )
            self.views[member.name] = self._view(member.name, member.role, member.adopted, child, want)
        spread.report(self.conditions, [existing[m.name] for m in want.members], self.event)
        return want

    def _ns_name(self) -> tuple[str, str]:
        return self.ref.namespace, self.ref.name

    def _view(
        self,
        name: str,
        role: Literal["server", "agent"],
        adopted: bool,
        child: Mapping[str, Any],
        want: Desired,
    ) -> _NodeView:
        st = child.get("status") or {}
        recorded = self.recorded.get(name) or {}
        view = _NodeView(name=name, role=role, adopted=adopted)
        view.vmid = st.get("vmid")
        view.pve_node = st.get("node")
        addresses = st.get("addresses") or []
        view.ip = want.static_ips.get(name) or (addresses[0] if addresses else None)
        replaced = self.day2.vm_replaced(view, recorded)
        if not replaced:
            # what was learned from this machine stays until it is looked at again
            view.host_key = recorded.get("hostKeyFingerprint")
            view.k3s_version = recorded.get("k3sVersion")
        conds = {c.get("type"): c for c in st.get("conditions") or []}
        stalled = conds.get("Stalled")
        if stalled and stalled.get("status") == "True":
            raise errors.PermanentError(
                f"ProxmoxVM {name}: {stalled.get('message', '')}", reason=stalled.get("reason") or "VMStalled"
            )
        ready = conds.get("Ready")
        view.vm_ready = bool(ready and ready.get("status") == "True" and view.ip)
        view.vm_problem = _vm_problem(conds)
        if not view.vm_ready:
            view.state = "Provisioning"
            view.message = (ready or {}).get("message") or ("no address yet" if not view.ip else None)
            if view.vm_problem:
                view.message = f"{view.vm_problem[0]}: {view.vm_problem[1]}"
            if replaced:
                view.state = day2.VM_REPLACED
                view.message = "its VM was destroyed outside the operator; waiting for the new VM"
        else:
            view.state = "VMReady"
            view.ready = bool(recorded.get("ready")) and not replaced  # last seen, until health looks
        return view

    def check_vms(self) -> None:
        pending = [v for v in self.views.values() if not v.vm_ready]
        total = len(self.views)
        troubled = [v for v in self.views.values() if v.vm_problem]
        why = "; ".join(
            f"ProxmoxVM {v.name}: {v.vm_problem[1]} ({v.vm_problem[0]})" for v in troubled[:3] if v.vm_problem
        )
        reason = troubled[0].vm_problem[0] if troubled and troubled[0].vm_problem else "WaitingForVMs"
        if pending:
            self.status["phase"] = "Provisioning"
            names = ", ".join(v.name for v in pending[:5])
            message = f"{total - len(pending)}/{total} VMs ready; waiting for {names}" + (
                f"; {why}" if why else ""
            )
            self.conditions.set(VMS_READY, False, reason, message)
            self.conditions.set(SERVERS_READY, "Unknown", "WaitingForVMs", "VMs are not ready yet")
            self.conditions.set(AGENTS_READY, "Unknown", "WaitingForVMs", "VMs are not ready yet")
            self.conditions.reconciling(True, "WaitingForVMs", message)
            self.day2.report_drift()
            raise errors.NotYet(WAIT_DELAY, "WaitingForVMs", message)
        if troubled:
            # running, but not as the spec says: the node may still work, so the pass goes on
            self.conditions.set(VMS_READY, False, reason, f"{total} VMs running; {why}")
            return
        self.conditions.set(VMS_READY, True, "VMsReady", f"{total} VMs running with addresses")

    async def secrets(self) -> tuple[str, tokens.JoinTokens]:
        """(SSH private key, join tokens); what is missing of ``<cluster>-token`` is created once."""
        ns = self.ref.namespace
        key_ref = self.spec.ssh.private_key_secret_ref
        private_key = await read_key(
            self.deps.objects, ns, key_ref.name, key_ref.key, what="spec.ssh.privateKeySecretRef"
        )
        token_ref = self.spec.k3s.token_secret_ref
        user_token = None
        if token_ref is not None:
            user_token = await read_key(
                self.deps.objects,
                ns,
                token_ref.name,
                token_ref.key,
                what="spec.k3s.tokenSecretRef",
                single_line=True,
            )
        self.tokens, created = await tokens.load(
            self.deps.objects, self.ref, user_token, user_secret=token_ref.name if token_ref else None
        )
        if created:
            self.event("Normal", "TokenCreated", created)
        self.status["tokenSecretRef"] = (
            {"name": token_ref.name, "key": token_ref.key}
            if token_ref
            else {"name": token_secret_name(self.ref.name), "key": TOKEN_KEY}
        )
        return private_key, self.tokens

    async def join_tokens(self, private_key: str, *, for_agents: bool) -> tokens.JoinTokens:
        """The tokens a join needs (tokens.for_join): no join goes out with a short token."""
        return await tokens.for_join(self, private_key, for_agents=for_agents)

    def target(self, view: _NodeView, private_key: str, pin: hostkeys.Pin | None = None) -> SshTarget:
        ssh = self.spec.ssh
        assert view.ip is not None
        recorded = {} if view.name in self.day2.replaced else self.recorded.get(view.name) or {}
        pin = pin or self.hostkeys.pin(view.name, view.ip, view.vmid, recorded)
        accept_changed = ssh.host_key_policy == "AcceptChanged"
        return SshTarget(
            host=view.ip,
            port=ssh.port,
            user=ssh.user,
            private_key=private_key,
            pinned_host_key=pin.fingerprint if pin else None,
            accept_changed_host_key=accept_changed,
            host_key_algorithms=pin.algorithms if pin and not accept_changed else (),
            connect_timeout_s=float(ssh.connect_timeout_seconds),
        )

    async def probe_all(self, private_key: str) -> None:
        """Log in to every node (its host key verified, or learned as the policy says) and read
        what runs there; pins learned on the way are saved before anything else runs."""
        timeout = float(self.spec.ssh.connect_timeout_seconds) * 3
        await self.hostkeys.load()

        async def one(view: _NodeView) -> None:
            assert view.ip is not None
            recorded = {} if view.name in self.day2.replaced else self.recorded.get(view.name) or {}
            try:
                pin = await self.hostkeys.prepare(view.name, view.ip, view.vmid, view.pve_node, recorded)
                target = self.target(view, private_key, pin)
                result = await hostkeys.first_contact(
                    nodes.probe(self.deps.ssh, view.name, target, timeout_s=timeout), view.name, pin
                )
            except errors.K3sDeployError as exc:
                cause = _refused_for_stale_cloud_init(view, exc)
                view.message = (cause or exc).message
                view.state = "Unreachable" if exc.transient else "Failed"
                if cause is not None:
                    raise cause from exc
                raise
            how = self.hostkeys.confirm(view.name, view.vmid, pin, result.host_public_key)
            hostkeys.report(self, view.name, how, pin, result.host_key)
            view.host_key = result.host_key
            view.k3s_version = result.installed_version
            view.server_up = result.server_up
            view.message = None
            view.state = "Installed" if result.installed_version else "Reachable"

        try:
            outcomes = await asyncio.gather(*(one(v) for v in self.views.values()), return_exceptions=True)
        finally:
            await self.hostkeys.save()
            hostkeys.tofu_condition(self)
        _raise_first(outcomes)

    def settings(self) -> install.K3sSettings:
        k3s = self.spec.k3s
        source = install.InstallSource()
        if k3s.install_source is not None and k3s.install_source.air_gap is not None:
            air = k3s.install_source.air_gap
            source = install.InstallSource(
                mode="airgap",
                script_url=air.installer_url,
                binary_url=air.binary_url,
                images_url=air.images_url,
                fetch_from=air.fetch_from,
                script_sha256=air.installer_sha256,
                binary_sha256=air.binary_sha256,
                images_sha256=air.images_sha256,
            )
        elif k3s.install_source is not None and k3s.install_source.script is not None:
            source = install.InstallSource(script_url=k3s.install_source.script.url)
        return install.K3sSettings(
            version=k3s.version,
            channel=k3s.channel,
            channel_url=k3s.channel_server if k3s.channel else None,
            server_args=tuple(k3s.server_args),
            agent_args=tuple(k3s.agent_args),
            tls_sans=tuple(k3s.tls_sans),
            endpoint=self.spec.endpoint,
            source=source,
        )

    def _installed(self, view: _NodeView) -> str | None:
        """The version to plan with: a node whose last install failed, or a server whose K3s never
        came up (no admin kubeconfig), is treated as not installed so it is installed again."""
        if (self.recorded.get(view.name) or {}).get("state") == INSTALL_FAILED:
            return None
        if view.role == "server" and not view.server_up:
            return None
        return view.k3s_version

    async def bootstrap(self, private_key: str, settings: install.K3sSettings) -> None:
        facts = [install.NodeFacts(v.name, v.role, v.ip, self._installed(v)) for v in self.views.values()]
        plan = install.plan(facts, settings, init_server=self.old_status.get("initServer"))
        if self.status.get("initServer") != plan.init_server:
            self.status["initServer"] = plan.init_server
            await self._flush()
        if not plan.steps:
            await self._secure_token(private_key)
            return
        self.status["phase"] = "Bootstrapping"
        self.conditions.reconciling(
            True, "InstallingK3s", "installing K3s on " + ", ".join(s.node for s in plan.steps)
        )
        sans = install.tls_sans(settings, [v.ip for v in self.views.values() if v.role == "server" and v.ip])
        timeout = float(self.spec.ssh.command_timeout_seconds)

        async def one(step: install.InstallStep) -> None:
            view = self.views[step.node]
            target = self.target(view, private_key)
            what = {
                "init": "initialising the cluster",
                "single": "single server",
                "join-server": "joining as server",
                "agent": "joining as agent",
            }[step.kind]
            self.event("Normal", "Installing", f"Installing K3s on {step.node} ({what})")
            view.state = "Installing"
            try:
                staged = await airgap.stage(
                    self.deps.ssh, self.deps.artefacts, step.node, target, settings.source, timeout_s=timeout
                )
                joining = step.kind in ("join-server", "agent")
                token = (
                    await self.join_tokens(private_key, for_agents=step.kind == "agent")
                    if joining
                    else self.tokens
                )
                script = install.render_script(
                    step, settings, token=token, node_ip=view.ip, sans=sans, installer_path=staged
                )
                await nodes.run_install(self.deps.ssh, step.node, target, script, timeout_s=timeout)
                after = await nodes.probe(self.deps.ssh, step.node, target, timeout_s=timeout)
            except errors.K3sDeployError as exc:
                view.state, view.message = (
                    (INSTALL_FAILED if not exc.transient else "Unreachable"),
                    exc.message,
                )
                raise
            view.k3s_version, view.server_up = after.installed_version, after.server_up
            view.state, view.message = "Joined", None
            self.event(
                "Normal",
                "Installed",
                f"K3s {after.installed_version or ''} installed on {step.node}".replace("  ", " "),
            )

        async def servers_one_by_one() -> None:
            for step in plan.server_joins:
                await one(step)

        async def agents_together() -> None:
            results = await asyncio.gather(*(one(s) for s in plan.agents), return_exceptions=True)
            _raise_first(results)

        for step in plan.first:
            try:
                await one(step)
            finally:
                await self._flush()
        results = await asyncio.gather(servers_one_by_one(), agents_together(), return_exceptions=True)
        await self._flush()
        _raise_first(results)
        await self._secure_token(private_key)

    async def _secure_token(self, private_key: str) -> None:
        """Keep the secure server token once a server runs, even before anything joins (and for a
        cluster bootstrapped with a plain token): one read, then it is in ``<cluster>-token``. Not
        there yet is no reason to hold the cluster back (only joins need it: they wait for it); a
        token file that is there but wrong stalls it."""
        if self.tokens.secure is None and any(
            v.role == "server" and v.server_up for v in self.views.values()
        ):
            with contextlib.suppress(errors.GuestNotReady):
                await self.join_tokens(private_key, for_agents=False)

    async def kubeconfig(self, private_key: str) -> str:
        """Store the user's kubeconfig Secret; return one the operator uses (pointing at a server)."""
        servers = [v for v in self.views.values() if v.role == "server" and v.k3s_version and v.ip]
        if not servers:
            raise errors.GuestNotReady("no server runs K3s yet")
        init = self.status.get("initServer")
        anchor = next((v for v in servers if v.name == init), servers[0])
        target = self.target(anchor, private_key)
        raw = await nodes.fetch_kubeconfig(self.deps.ssh, anchor.name, target)
        assert anchor.ip is not None
        try:
            allowed = sanitise(raw)
        except errors.K3sDeployError as exc:
            raise nodes.with_node(anchor.name, exc) from None
        operator_view = allowed.build(server=server_url(anchor.ip), name=self.ref.name)
        public_url = server_url(self.spec.endpoint) if self.spec.endpoint else server_url(anchor.ip)
        public = allowed.build(server=public_url, name=self.ref.name)
        name = kubeconfig_secret_name(self.ref.name)
        changed = await self.deps.objects.write_secret(
            self.ref.namespace,
            name,
            {KUBECONFIG_KEY: public.encode()},
            labels=managed_labels(self.ref.name),
            owner=self.ref.owner_reference(),
        )
        if changed:
            self.event(
                "Normal",
                "KubeconfigWritten",
                f"Wrote the admin kubeconfig to Secret {name} (key {KUBECONFIG_KEY})",
            )
            if allowed.dropped:
                self.event(
                    "Warning",
                    "KubeconfigFieldsDropped",
                    f"node {anchor.name}: the kubeconfig K3s wrote carries fields K3s never writes, left out: "
                    + ", ".join(allowed.dropped),
                )
        self.status["serverURL"] = public_url
        self.status["kubeconfigSecretRef"] = {"name": name, "key": KUBECONFIG_KEY}
        return operator_view

    async def health(self, kubeconfig: str, settings: install.K3sSettings) -> None:
        found = {n.name: n for n in guest_values.target_nodes(await self.deps.target.nodes(kubeconfig))}
        for view in self.views.values():
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
        self._store_nodes()
        if settings.version:
            self.status["resolvedVersion"] = settings.version
        elif self.status.get("k3sVersion"):
            self.status["resolvedVersion"] = self.status["k3sVersion"]
        waiting = []
        for role, cond in (("server", SERVERS_READY), ("agent", AGENTS_READY)):
            views = [v for v in self.views.values() if v.role == role]
            ready = [v for v in views if v.ready]
            label = f"{role}s"
            if len(ready) == len(views):
                self.conditions.set(
                    cond, True, f"{role.capitalize()}sReady", f"{len(ready)}/{len(views)} {label} Ready"
                )
            else:
                late = ", ".join(v.name for v in views if not v.ready)
                self.conditions.set(
                    cond,
                    False,
                    "NodesNotReady",
                    f"{len(ready)}/{len(views)} {label} Ready; waiting for {late}",
                )
                waiting.append(late)
        if waiting:
            self.conditions.reconciling(
                True, "WaitingForNodes", "waiting for nodes to be Ready: " + ", ".join(waiting)
            )
            raise errors.NotYet(NODE_WAIT_DELAY, "WaitingForNodes")

    # --- the pass ------------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        requeue: float | None = None
        error: errors.K3sDeployError | None = None
        try:
            if self.spec.paused:
                self.status["phase"] = "Paused"
                self.conditions.reconciling(False)
                self.day2.paused()
                return self._outcome(None, None)
            await self.ensure_children()
            self.day2.power()
            self.check_vms()
            private_key, _tokens = await self.secrets()
            settings = self.settings()
            self.status["phase"] = (
                "Bootstrapping"
                if not self.old_status.get("readyServers")
                else self.old_status.get("phase", "Bootstrapping")
            )
            await self.probe_all(private_key)
            if await self.day2.before_bootstrap(private_key, settings):
                raise errors.NotYet(WAIT_DELAY)
            await self.bootstrap(private_key, settings)
            operator_kubeconfig = await self.kubeconfig(private_key)
            await self.health(operator_kubeconfig, settings)
            self.day2.after_health()
            self.conditions.reconciling(False)
            self.conditions.stalled(False)
            self.status["phase"] = "Ready"
        except errors.NotYet as wait:
            self.conditions.stalled(False)
            requeue = wait.after_s
        except errors.K3sDeployError as exc:
            error = exc
            self.conditions.from_error(exc)
            self.status["phase"] = (
                "Stalled" if not exc.transient else self.status.get("phase") or "Provisioning"
            )
            self._mark_step_failed(exc)
        return self._outcome(requeue, error)

    def _mark_step_failed(self, exc: errors.K3sDeployError) -> None:
        status = "Unknown" if exc.transient else False
        vm_trouble = any(v.vm_problem and v.vm_ready for v in self.views.values())  # VMsReady says it
        if not self.conditions.is_true(VMS_READY) and not vm_trouble:
            self.conditions.set(VMS_READY, status, exc.reason, exc.message)
            return
        failed = [v for v in self.views.values() if v.state in ("Failed", "Unreachable", INSTALL_FAILED)]
        roles = {v.role for v in failed} or {"server", "agent"}
        for role, cond in (("server", SERVERS_READY), ("agent", AGENTS_READY)):
            if role in roles:
                self.conditions.set(cond, status, exc.reason, exc.message)

    def _outcome(self, requeue: float | None, error: errors.K3sDeployError | None) -> Outcome:
        if self.views:
            self._store_nodes()
        self._summarize()
        self.status["observedGeneration"] = self.generation
        if error is not None and not error.transient:
            previous = {c.get("type"): c for c in self.old_status.get("conditions") or []}.get(
                "Stalled"
            ) or {}
            if previous.get("reason") != error.reason or previous.get("message") != redact(error.message):
                self.event("Warning", error.reason, error.message)
        elif error is not None:
            previous = {c.get("type"): c for c in self.old_status.get("conditions") or []}.get(
                "Reconciling"
            ) or {}
            if previous.get("message") != redact(error.message):
                self.event("Warning", error.reason, error.message)
        return Outcome(
            status=self.status, events=self.events, requeue_after=requeue, error=error, flushed=self.flushed
        )

    def _ready_message(self) -> str:
        return (
            f"{self.status.get('readyServers', 0)} servers and {self.status.get('readyAgents', 0)} agents Ready"
            + (f" at {self.status['k3sVersion']}" if self.status.get("k3sVersion") else "")
        )


async def reconcile(body: Mapping[str, Any], deps: Deps, *, generation: int | None = None) -> Outcome:
    """Run one pass; never raises K3sDeployError (it is folded into the outcome)."""
    return await Reconciler(body, deps, generation=generation).run()


def _vm_problem(conds: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of a child VM condition that explains why its node cannot progress: a stale
    cloud-init drive (a restart needed, or reboots that did not help), or a repair reboot under way."""
    stale = conds.get(CLOUD_INIT_STALE) or {}
    if stale.get("status") == "True":
        return CLOUD_INIT_STALE, f"{stale.get('reason') or 'Stale'}: {stale.get('message') or ''}".rstrip(
            ": "
        )
    agent = conds.get(AGENT_READY) or {}
    if agent.get("status") == "False" and agent.get("reason") == CLOUD_INIT_STALE:
        return CLOUD_INIT_STALE, str(agent.get("message") or "rebooting to rebuild its cloud-init drive")
    return None


def _refused_for_stale_cloud_init(view: _NodeView, exc: errors.K3sDeployError) -> errors.SshAuthFailed | None:
    """A refused key on a guest that booted with stale cloud-init: the drive is the cause to report."""
    if not isinstance(exc, errors.SshAuthFailed) or view.vm_problem is None:
        return None
    reason, message = view.vm_problem
    return errors.SshAuthFailed(
        f"{exc.message}; its ProxmoxVM reports {reason} ({message}), so the guest likely booted without "
        "the current key: restart the VM to rebuild its cloud-init drive",
        reason=reason,
    )


def _raise_first(results: Sequence[object]) -> None:
    """Re-raise the most telling failure of parallel work: a permanent one before a transient one."""
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        if not isinstance(failure, errors.K3sDeployError):
            raise failure
    permanent = [f for f in failures if isinstance(f, errors.K3sDeployError) and not f.transient]
    if permanent:
        raise permanent[0]
    if failures:
        raise failures[0]


def _version_key(version: str) -> tuple[int, ...]:
    core = version.lstrip("v").split("+", 1)[0].split("-", 1)[0]
    try:
        return tuple(int(p) for p in core.split("."))
    except ValueError:
        return (0,)
