"""K3s bootstrap planning: who initialises, who joins whom, in which order, with which command.

Pure functions only. The plan follows the K3s HA guide: with more than one server the first server
starts with ``--cluster-init`` (embedded etcd); every other server joins it with ``--server``; agents
join once a server answers. Servers join one at a time (etcd member changes are serial); agents join
in parallel. The tokens (tokens.py: the first server starts with the password, joining servers get
the secure server token, agents the agent token) travel in the script's environment, which is sent
over the SSH channel's stdin, so they never appear on a command line, in a log or in status.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import kubevip, node_config
from k3s_deploy.services.k3scluster.kubeconfig import endpoint_url, server_url
from k3s_deploy.services.k3scluster.tokens import JoinTokens, new_password

new_token = new_password  # a fresh server password (kept for callers outside the operator: bench)

Role = Literal["server", "agent"]
StepKind = Literal["init", "single", "join-server", "agent"]

DEFAULT_SCRIPT_URL = "https://get.k3s.io"
DEFAULT_CHANNEL = "stable"
VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")
_VERSION_IN_OUTPUT = re.compile(r"\bv\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?")

# A server that started writes its admin kubeconfig here; its absence means K3s never came up.
SERVER_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
SERVER_UP_MARKER = "k3s-deploy:server-kubeconfig"
# K3s's embedded etcd keeps its member name here; a server on SQLite (kine) has no such file.
EMBEDDED_ETCD_FILE = "/var/lib/rancher/k3s/server/db/etcd/name"
EMBEDDED_ETCD_MARKER = "k3s-deploy:embedded-etcd"
KUBE_VIP_MARKER = "k3s-deploy:kube-vip-manifest"  # the operator's kube-vip manifest is on the server
# Prints the installed K3s version (first line of `k3s --version`), then the markers: a server is up,
# it runs embedded etcd, it carries the kube-vip manifest (so an unset spec.kubeVip removes it even
# after an operator restart).
CONFIG_DIGEST_MARKER = "k3s-deploy:config-digest"
PROBE_COMMAND = (
    f"printf '{CONFIG_DIGEST_MARKER} %s\\n' \"$(head -c 64 {node_config.DIGEST_FILE} 2>/dev/null)\"; "
    f"test -s {SERVER_KUBECONFIG} && echo {SERVER_UP_MARKER}; "
    f"test -e {EMBEDDED_ETCD_FILE} && echo {EMBEDDED_ETCD_MARKER}; "
    f"test -e {kubevip.MANIFEST_PATH} && echo {KUBE_VIP_MARKER}; "
    "for b in k3s /usr/local/bin/k3s; do "
    'if command -v "$b" >/dev/null 2>&1; then "$b" --version 2>/dev/null | head -n 1; exit 0; fi; '
    "done; exit 0"
)
# Exit status the install script uses when the installer could not be downloaded (transient).
DOWNLOAD_FAILED = 100
AIRGAP_BINARY = "/usr/local/bin/k3s"
AIRGAP_IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"


@dataclass(frozen=True)
class InstallSource:
    """Where K3s comes from: the install script at a URL (default get.k3s.io, or a mirror or the lab),
    or air-gapped artefacts (installer, binary, optional images), in which case the installer runs with
    downloads skipped. ``fetch_from`` says who downloads them: each node with curl, or the operator,
    which copies them to the node before the install (see ``airgap.py``)."""

    mode: Literal["script", "airgap"] = "script"
    script_url: str = DEFAULT_SCRIPT_URL
    binary_url: str | None = None
    images_url: str | None = None
    fetch_from: Literal["Operator", "Node"] = "Node"
    script_sha256: str | None = None
    binary_sha256: str | None = None
    images_sha256: str | None = None

    @property
    def staged_by_operator(self) -> bool:
        return self.mode == "airgap" and self.fetch_from == "Operator"


@dataclass(frozen=True)
class K3sSettings:
    """The K3s part of the spec, already validated."""

    version: str | None = None
    channel: str | None = None
    channel_url: str | None = None
    server_args: tuple[str, ...] = ()
    agent_args: tuple[str, ...] = ()
    tls_sans: tuple[str, ...] = ()
    endpoint: str | None = None
    source: InstallSource = field(default_factory=InstallSource)
    # Each member's settings files by node name (node_settings.with_files); a node with files gets its
    # arguments, SANs and registries from them instead of the installer's command line.
    node_files: Mapping[str, node_config.NodeFiles] = field(default_factory=dict)

    def wants(self, installed: str | None) -> bool:
        """Whether a node at ``installed`` already satisfies the spec (a channel accepts any version)."""
        if installed is None:
            return False
        return self.version is None or installed == self.version


@dataclass(frozen=True)
class NodeFacts:
    """What the planner needs to know about one member."""

    name: str
    role: Role
    ip: str | None
    installed_version: str | None = None


@dataclass(frozen=True)
class InstallStep:
    node: str
    role: Role
    kind: StepKind
    join_url: str | None = None


@dataclass(frozen=True)
class InstallPlan:
    """``first`` (the init server, or the anchor reinstalled in place) runs alone; then two lanes run
    side by side: ``server_joins`` one at a time (etcd admits one learner at a time: concurrent joins
    fail with "too many learner members", k3s-io/k3s#4335) and ``agents`` all in parallel (an agent
    needs only one server). ``waves`` is the same plan as a strictly sequential list."""

    init_server: str | None
    waves: tuple[tuple[InstallStep, ...], ...]
    unchanged: tuple[str, ...]
    first: tuple[InstallStep, ...] = ()
    server_joins: tuple[InstallStep, ...] = ()
    agents: tuple[InstallStep, ...] = ()
    anchor: str | None = None  # the server everyone joins

    @property
    def steps(self) -> list[InstallStep]:
        return [step for wave in self.waves for step in wave]


def validate_version(version: str | None) -> None:
    if version is not None and not VERSION_RE.match(version):
        raise errors.InvalidSpec(
            f"spec.k3s.version {version!r} is not a K3s release such as v1.31.4+k3s1", reason="InvalidVersion"
        )


def parse_version(output: str) -> str | None:
    """``k3s version v1.31.4+k3s1 (a1b2c3d)`` -> ``v1.31.4+k3s1``; None when nothing is installed."""
    match = _VERSION_IN_OUTPUT.search(output)
    return match.group(0) if match else None


def plan(nodes: Sequence[NodeFacts], settings: K3sSettings, *, init_server: str | None) -> InstallPlan:
    """Plan the installs that bring every node to the wanted version.

    ``nodes`` are in spec order (servers first). ``init_server`` is the one recorded in status: it keeps
    the role while it is a member, so a restarted operator never initialises a second cluster. When
    some server already runs K3s, everyone who needs an install joins it, the recorded init server
    included (a rebuilt init server joins the existing cluster instead of starting a new one).
    """
    servers = [n for n in nodes if n.role == "server"]
    agents = [n for n in nodes if n.role == "agent"]
    if not servers:
        raise errors.InvalidSpec("a K3s cluster needs at least one server", reason="NoServers")
    init, anchor = init_and_anchor(servers, init_server)
    unchanged = tuple(n.name for n in nodes if settings.wants(n.installed_version))
    first: list[InstallStep] = []
    if anchor.installed_version is None or anchor.name not in unchanged:
        # No server runs K3s yet, or (a version change) the anchor is reinstalled in place before
        # anyone joins it.
        first.append(InstallStep(anchor.name, "server", "init" if len(servers) > 1 else "single"))
    join = join_url(settings, anchor) or _url(anchor)
    server_joins = tuple(
        InstallStep(s.name, "server", "join-server", join)
        for s in servers
        if s is not anchor and s.name not in unchanged
    )
    agent_steps = tuple(
        InstallStep(a.name, "agent", "agent", join) for a in agents if a.name not in unchanged
    )
    waves: list[tuple[InstallStep, ...]] = [tuple(first)] if first else []
    waves += [(step,) for step in server_joins]
    if agent_steps:
        waves.append(agent_steps)
    return InstallPlan(
        init_server=init.name,
        waves=tuple(waves),
        unchanged=unchanged,
        first=tuple(first),
        server_joins=server_joins,
        agents=agent_steps,
        anchor=anchor.name,
    )


def init_and_anchor(servers: Sequence[NodeFacts], init_server: str | None) -> tuple[NodeFacts, NodeFacts]:
    """The init server (recorded in status, else the first) and the anchor everyone joins: the init
    server while it runs K3s, else the first server that does (a rebuilt init server joins it)."""
    init = next((s for s in servers if s.name == init_server), servers[0])
    installed = [s for s in servers if s.installed_version is not None]
    return init, (init if init.installed_version is not None or not installed else installed[0])


def join_url(settings: K3sSettings, anchor: NodeFacts) -> str | None:
    """Where nodes join: spec.endpoint when there is one (a joined node keeps working when the anchor
    is lost), else the anchor's address (None while it has none)."""
    if settings.endpoint:
        return endpoint_url(settings.endpoint)
    return server_url(anchor.ip) if anchor.ip else None


def _url(node: NodeFacts) -> str:
    if not node.ip:
        raise errors.GuestNotReady(f"{node.name} has no address yet")
    return server_url(node.ip)


def tls_sans(settings: K3sSettings, server_ips: Sequence[str]) -> list[str]:
    """Every server address, the user's endpoint and extra SANs, deduplicated in order."""
    out: list[str] = []
    for san in [*server_ips, *([settings.endpoint] if settings.endpoint else []), *settings.tls_sans]:
        host = _host_of(san)
        if host and host not in out:
            out.append(host)
    return out


def _host_of(value: str) -> str:
    text = value.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        return text[1 : text.index("]")] if "]" in text else text
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text


def k3s_args(
    step: InstallStep,
    settings: K3sSettings,
    *,
    node_ip: str | None,
    sans: Sequence[str],
    node_args: Sequence[str] = (),
) -> list[str]:
    """The arguments after ``sh -s -`` (subcommand first); ``node_args`` are the member's own (labels,
    taints: :func:`registration.args`)."""
    args: list[str] = [step.role]
    if step.kind == "init":
        args.append("--cluster-init")
    # a --server here would win over the node's join file (K3s: the command line beats config files)
    if step.kind == "join-server" and step.join_url and not _joins_by_file(settings, step):
        args += ["--server", step.join_url]
    args += ["--node-name", step.node]
    if node_ip:
        args += ["--node-ip", node_ip]
    if step.node in settings.node_files:
        return args  # the rest is in the node's config.yaml.d files
    if step.role == "server":
        for san in sans:
            args += ["--tls-san", san]
        args += list(settings.server_args)
    else:
        args += list(settings.agent_args)
    return args + list(node_args)


def render_script(
    step: InstallStep,
    settings: K3sSettings,
    *,
    token: str | JoinTokens,
    node_ip: str | None,
    sans: Sequence[str],
    installer_path: str | None = None,
    node_args: Sequence[str] = (),
) -> str:
    """The POSIX shell script sent over stdin to ``sh -s`` on the guest.

    ``installer_path``: where the operator copied the installer (``fetchFrom: Operator``; the binary
    and images are in place already); the script runs it and removes it, downloading nothing.
    """
    tokens = token if isinstance(token, JoinTokens) else JoinTokens(server=token, agent=None)
    env: list[tuple[str, str]] = tokens.env(step.kind)
    if settings.version:
        env.append(("INSTALL_K3S_VERSION", settings.version))
    else:
        env.append(("INSTALL_K3S_CHANNEL", settings.channel or DEFAULT_CHANNEL))
        if settings.channel_url:
            env.append(("INSTALL_K3S_CHANNEL_URL", settings.channel_url))
    if step.role == "agent" and step.join_url and not _joins_by_file(settings, step):
        env.append(("K3S_URL", step.join_url))  # the installer keeps it in the unit's env file
    if settings.source.mode == "airgap":
        env.append(("INSTALL_K3S_SKIP_DOWNLOAD", "true"))
    lines = ["set -eu"]
    files = settings.node_files.get(step.node)
    if files is not None:
        # K3s reads them when the installer starts it; written first, so the first start has them.
        lines += [*node_config.files_script(files), node_config.digest_script(files.digest).strip()]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env]
    args = k3s_args(step, settings, node_ip=node_ip, sans=sans, node_args=node_args)
    argv = " ".join(shlex.quote(a) for a in args)
    source = settings.source
    if source.staged_by_operator:
        if installer_path is None:
            raise ValueError("fetchFrom: Operator needs the path of the installer copied to the node")
        lines += [f"installer={shlex.quote(installer_path)}", "trap 'rm -f \"$installer\"' EXIT"]
        lines.append(f'sh "$installer" {argv}')
        return "\n".join(lines) + "\n"
    lines += ['installer="$(mktemp)"', "trap 'rm -f \"$installer\"' EXIT"]
    if source.mode == "airgap" and source.binary_url:
        lines.append(_download(source.binary_url, AIRGAP_BINARY) + f" && chmod 0755 {AIRGAP_BINARY}")
    if source.mode == "airgap" and source.images_url:
        lines.append(f"mkdir -p {AIRGAP_IMAGES_DIR}")
        name = source.images_url.rstrip("/").rsplit("/", 1)[-1] or "k3s-airgap-images.tar"
        lines.append(_download(source.images_url, f"{AIRGAP_IMAGES_DIR}/{name}"))
    lines.append(_download(source.script_url, '"$installer"', quote_dest=False))
    lines.append(f'sh "$installer" {argv}')
    return "\n".join(lines) + "\n"


def _joins_by_file(settings: K3sSettings, step: InstallStep) -> bool:
    files = settings.node_files.get(step.node)
    return files is not None and files.server is not None


def _download(url: str, dest: str, *, quote_dest: bool = True) -> str:
    target = shlex.quote(dest) if quote_dest else dest
    return (
        f"curl -sfL --retry 3 -o {target} {shlex.quote(url)} "
        f"|| {{ echo {shlex.quote('cannot download ' + url)} >&2; exit {DOWNLOAD_FAILED}; }}"
    )
