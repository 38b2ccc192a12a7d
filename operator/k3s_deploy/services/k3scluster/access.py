"""How the operator reaches a cluster: the SSH target of a node (the one place it is built), the SSH key
and join tokens (read from their Secrets, the secure one from a server), the K3s install settings and
the admin kubeconfig."""

from __future__ import annotations

from collections.abc import Sequence

from k3s_deploy import errors
from k3s_deploy.api.k3scluster import SecretKeyStatusRef, SshSettings
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy.services.k3scluster import hostkeys, install, nodes, registration, tokens
from k3s_deploy.services.k3scluster.kubeconfig import endpoint_url, sanitise, server_url
from k3s_deploy.services.k3scluster.secrets import (
    KUBECONFIG_KEY,
    TOKEN_KEY,
    kubeconfig_secret_name,
    managed_labels,
    read_key,
    token_secret_name,
)
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView


def ssh_target(ssh: SshSettings, host: str, private_key: str, pin: hostkeys.Pin | None) -> SshTarget:
    """The SSH target of a member at ``host`` as spec.ssh says to log in, with the host key to demand
    (and, unless any changed key is accepted, only the algorithms that make the server show it)."""
    accept_changed = ssh.host_key_policy == "AcceptChanged"
    return SshTarget(
        host=host,
        port=ssh.port,
        user=ssh.user,
        private_key=private_key,
        pinned_host_key=pin.fingerprint if pin else None,
        accept_changed_host_key=accept_changed,
        host_key_algorithms=pin.algorithms if pin and not accept_changed else (),
        connect_timeout_s=float(ssh.connect_timeout_seconds),
    )


def node_target(
    r: ClusterPass, view: NodeView, private_key: str, pin: hostkeys.Pin | None = None
) -> SshTarget:
    """The target of a member, pinned to ``pin`` or to the key pinned for its machine."""
    assert view.ip is not None
    pin = pin or r.hostkeys.pin(view.name, view.ip, view.vmid, r.recorded_for(view.name))
    return ssh_target(r.spec.ssh, view.ip, private_key, pin)


async def secrets(r: ClusterPass) -> tuple[str, tokens.JoinTokens]:
    """(SSH private key, join tokens); what is missing of ``<cluster>-token`` is created once."""
    ns = r.ref.namespace
    key_ref = r.spec.ssh.private_key_secret_ref
    private_key = await read_key(
        r.deps.objects, ns, key_ref.name, key_ref.key, what="spec.ssh.privateKeySecretRef"
    )
    token_ref = r.spec.k3s.token_secret_ref
    user_token = None
    if token_ref is not None:
        user_token = await read_key(
            r.deps.objects,
            ns,
            token_ref.name,
            token_ref.key,
            what="spec.k3s.tokenSecretRef",
            single_line=True,
        )
    r.tokens, created = await tokens.load(
        r.deps.objects, r.ref, user_token, user_secret=token_ref.name if token_ref else None
    )
    if created:
        r.event("Normal", "TokenCreated", created)
    r.status.token_secret_ref = (
        SecretKeyStatusRef(name=token_ref.name, key=token_ref.key)
        if token_ref
        else SecretKeyStatusRef(name=token_secret_name(r.ref.name), key=TOKEN_KEY)
    )
    return private_key, r.tokens


async def join_tokens(r: ClusterPass, private_key: str, *, for_agents: bool) -> tokens.JoinTokens:
    """The tokens a join needs: the secure server token (read once from a running server) and,
    for agents, whether the servers run with our agent token. No join goes out with a short token."""
    if r.tokens.secure is not None and (not for_agents or r.agent_token_checked):
        return r.tokens
    servers = [v for v in r.views.values() if v.role == "server" and v.k3s_version and v.server_up and v.ip]
    init = r.status.init_server
    anchor = next((v for v in servers if v.name == init), servers[0] if servers else None)
    if anchor is None:
        raise errors.GuestNotReady("waiting for a server that runs K3s to read its secure join token from")
    had_secure = r.tokens.secure is not None
    r.tokens = await tokens.learn(
        r.deps.ssh,
        anchor.name,
        node_target(r, anchor, private_key),
        r.tokens,
        agents_joining=for_agents,
    )
    r.agent_token_checked = r.agent_token_checked or for_agents
    if not had_secure:
        user = r.spec.k3s.token_secret_ref is not None
        await tokens.save(r.deps.objects, r.ref, r.tokens, keep_token=None if user else r.tokens.server)
        r.event(
            "Normal",
            "SecureTokenStored",
            f"Read the secure join token from {anchor.name} into Secret {token_secret_name(r.ref.name)}: "
            "joining nodes now check the cluster CA",
        )
    return r.tokens


def settings(r: ClusterPass) -> install.K3sSettings:
    k3s = r.spec.k3s
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
        endpoint=r.spec.endpoint,
        source=source,
    )


async def kubeconfig(r: ClusterPass, private_key: str) -> str:
    """Store the user's kubeconfig Secret; return one the operator uses (pointing at a server)."""
    servers = [v for v in r.views.values() if v.role == "server" and v.k3s_version and v.ip]
    if not servers:
        raise errors.GuestNotReady("no server runs K3s yet")
    init = r.status.init_server
    anchor = next((v for v in servers if v.name == init), servers[0])
    raw = await nodes.fetch_kubeconfig(r.deps.ssh, anchor.name, node_target(r, anchor, private_key))
    assert anchor.ip is not None
    try:
        allowed = sanitise(raw)
    except errors.K3sDeployError as exc:
        raise nodes.with_node(anchor.name, exc) from None
    operator_view = allowed.build(server=server_url(anchor.ip), name=r.ref.name)
    public_url = endpoint_url(r.spec.endpoint) if r.spec.endpoint else server_url(anchor.ip)
    public = allowed.build(server=public_url, name=r.ref.name)
    name = kubeconfig_secret_name(r.ref.name)
    changed = await r.deps.objects.write_secret(
        r.ref.namespace,
        name,
        {KUBECONFIG_KEY: public.encode()},
        labels=managed_labels(r.ref.name),
        owner=r.ref.owner_reference(),
    )
    if changed:
        r.event(
            "Normal",
            "KubeconfigWritten",
            f"Wrote the admin kubeconfig to Secret {name} (key {KUBECONFIG_KEY})",
        )
        if allowed.dropped:
            r.event(
                "Warning",
                "KubeconfigFieldsDropped",
                f"node {anchor.name}: the kubeconfig K3s wrote carries fields K3s never writes, left out: "
                + ", ".join(allowed.dropped),
            )
    r.status.server_url = public_url
    r.status.kubeconfig_secret_ref = SecretKeyStatusRef(name=name, key=KUBECONFIG_KEY)
    return operator_view


async def install_script(
    r: ClusterPass,
    step: install.InstallStep,
    settings: install.K3sSettings,
    private_key: str,
    *,
    sans: Sequence[str],
    installer_path: str | None,
) -> str:
    """The install script of ``step``: the join token its kind needs (agents never get the server
    token), and the member's own labels and taints (:mod:`registration`)."""
    view = r.views[step.node]
    joining = step.kind in ("join-server", "agent")
    token = await join_tokens(r, private_key, for_agents=step.kind == "agent") if joining else r.tokens
    return install.render_script(
        step,
        settings,
        token=token,
        node_ip=view.ip,
        sans=sans,
        installer_path=installer_path,
        node_args=registration.args(view.node_labels, view.node_taints),
    )
