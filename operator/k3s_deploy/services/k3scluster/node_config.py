"""The K3s settings of one node as files (pure): ``config.yaml.d`` drop-ins and ``registries.yaml``.

K3s reads ``/etc/rancher/k3s/config.yaml.d/*.yaml`` and ``registries.yaml`` when it starts, so settings
kept in files (instead of one-shot installer arguments) can change later: write the files, restart K3s.
Arguments map to config keys by K3s's rule (the flag name without dashes; repeatable flags become
lists). Labels and taints go to a file of their own that is left out of the digest: K3s applies them
only when a node registers, so a change to them never calls for a restart (the cluster's API syncs
them on existing nodes). The digest is keyed (HMAC) because registries.yaml holds credentials and the
digest is written to status and onto the node.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from k3s_deploy import errors

Role = Literal["server", "agent"]

K3S_DIR = "/etc/rancher/k3s"
JOIN_FILE = f"{K3S_DIR}/config.yaml.d/40-k3s-deploy-join.yaml"
CONFIG_FILE = f"{K3S_DIR}/config.yaml.d/50-k3s-deploy.yaml"
NODE_FILE = f"{K3S_DIR}/config.yaml.d/60-k3s-deploy-node.yaml"
REGISTRIES_FILE = f"{K3S_DIR}/registries.yaml"
REGISTRY_CERTS = f"{K3S_DIR}/k3s-deploy-registries"
DIGEST_FILE = f"{K3S_DIR}/k3s-deploy-config.digest"
MARKER = "# written by k3s-deploy from spec.k3s; edits are replaced"
# Files the operator may remove when the spec no longer wants them (only when they carry MARKER).
MANAGED = (JOIN_FILE, CONFIG_FILE, NODE_FILE, REGISTRIES_FILE)

# K3s flags that take a list (StringSlice): repeated flags append, and a config file takes a list.
REPEATABLE = frozenset(
    {
        "tls-san",
        "disable",
        "node-label",
        "node-taint",
        "node-ip",
        "node-external-ip",
        "kube-apiserver-arg",
        "kube-scheduler-arg",
        "kube-controller-manager-arg",
        "kube-cloud-controller-manager-arg",
        "kubelet-arg",
        "kube-proxy-arg",
        "etcd-arg",
        "cluster-cidr",
        "service-cidr",
    }
)
_FLAG_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
SHORT = {"s": "server", "t": "token", "d": "data-dir", "i": "node-ip", "v": "v"}
# Set by the operator (identity, joining) or secrets: never taken from the spec's arguments.
OWNED = frozenset({"token", "token-file", "agent-token", "agent-token-file", "server", "node-name", "config"})


@dataclass(frozen=True)
class NodeFile:
    """One file to put on a node. ``restart``: a change only takes effect when K3s restarts."""

    content: str = field(repr=False)  # registries.yaml and key files hold secrets
    mode: int = 0o600
    restart: bool = True


@dataclass(frozen=True)
class RegistryHost:
    """``configs.<host>``, its Secret values already read."""

    host: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ca: str | None = field(default=None, repr=False)
    cert: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class Mirror:
    registry: str
    endpoints: tuple[str, ...] = ()
    rewrites: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RegistriesMaterial:
    mirrors: tuple[Mirror, ...] = ()
    configs: tuple[RegistryHost, ...] = ()


@dataclass(frozen=True)
class NodeSettings:
    """What one node's files are made of."""

    role: Role
    args: tuple[str, ...] = ()
    tls_sans: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()
    registries: RegistriesMaterial | None = None
    # The URL this node joins through (``server:``; K3S_URL / --server of the installer); None for the
    # server that started the cluster. In the digest: a changed spec.endpoint restarts the node with it.
    server: str | None = None


def config_keys(args: Sequence[str], *, what: str = "serverArgs") -> dict[str, Any]:
    """``--disable=traefik --kubelet-arg max-pods=50 --debug`` -> ``{disable: [traefik], kubelet-arg:
    [max-pods=50], debug: true}``. A flag's value is after ``=`` or the next item (when that is not a
    flag); a lone flag is ``true``. Later values of a single-valued flag win, as on K3s's command line."""
    out: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise errors.InvalidSpec(
                f"spec.k3s.{what}: {arg!r} is not a K3s flag; write flags as --name=value",
                reason="InvalidArgs",
            )
        name, eq, value = arg.lstrip("-").partition("=")
        name = SHORT.get(name, name) if not arg.startswith("--") else name
        if not _FLAG_NAME.fullmatch(name):  # a key ending in + would append in a config file
            raise errors.InvalidSpec(
                f"spec.k3s.{what}: {arg!r} is not a K3s flag name (lower-case letters, digits and '-')",
                reason="InvalidArgs",
            )
        if name in OWNED:
            raise errors.InvalidSpec(
                f"spec.k3s.{what}: --{name} is set by the operator (identity, joining, tokens); remove it",
                reason="InvalidArgs",
            )
        val: Any
        if eq:
            val = value
        elif i < len(items) and not items[i].startswith("-"):
            val = items[i]
            i += 1
        else:
            val = True
        if name in REPEATABLE:
            out.setdefault(name, []).append(str(val))
        else:
            out[name] = val
    return out


def render(node: NodeSettings) -> dict[str, NodeFile]:
    """Every file the node should have, by path."""
    what = "serverArgs" if node.role == "server" else "agentArgs"
    keys = config_keys(node.args, what=what)
    if node.role == "server" and node.tls_sans:
        keys["tls-san"] = [*node.tls_sans, *[s for s in keys.get("tls-san", []) if s not in node.tls_sans]]
    files = {CONFIG_FILE: NodeFile(_yaml(keys))}
    if node.server:
        files[JOIN_FILE] = NodeFile(_yaml({"server": node.server}))
    registration: dict[str, Any] = {}
    if node.labels:
        registration["node-label+"] = [f"{k}={node.labels[k]}" for k in sorted(node.labels)]
    if node.taints:
        registration["node-taint+"] = list(node.taints)
    if registration:
        files[NODE_FILE] = NodeFile(_yaml(registration), restart=False)
    if node.registries is not None and (node.registries.mirrors or node.registries.configs):
        files.update(registries_files(node.registries))
    return files


def registries_files(reg: RegistriesMaterial) -> dict[str, NodeFile]:
    """registries.yaml in K3s's format, plus the TLS files it points at (all 0600)."""
    files: dict[str, NodeFile] = {}
    doc: dict[str, Any] = {}
    if reg.mirrors:
        doc["mirrors"] = {}
        for m in reg.mirrors:
            entry: dict[str, Any] = {"endpoint": list(m.endpoints)}
            if m.rewrites:
                entry["rewrite"] = dict(m.rewrites)
            doc["mirrors"][m.registry] = entry
    if reg.configs:
        doc["configs"] = {}
        for c in reg.configs:
            conf: dict[str, Any] = {}
            if c.token is not None:
                conf["auth"] = {"token": c.token}
            elif c.username is not None:
                conf["auth"] = {"username": c.username, "password": c.password or ""}
            tls: dict[str, Any] = {}
            base = f"{REGISTRY_CERTS}/{_safe(c.host)}"
            for key, value, name in (("ca_file", c.ca, "ca.crt"), ("cert_file", c.cert, "tls.crt")):
                if value is not None:
                    files[f"{base}/{name}"] = NodeFile(value)
                    tls[key] = f"{base}/{name}"
            if c.key is not None:
                files[f"{base}/tls.key"] = NodeFile(c.key)
                tls["key_file"] = f"{base}/tls.key"
            if c.insecure_skip_verify:
                tls["insecure_skip_verify"] = True
            if tls:
                conf["tls"] = tls
            doc["configs"][c.host] = conf
    files[REGISTRIES_FILE] = NodeFile(_yaml(doc))
    return files


def digest(files: Mapping[str, NodeFile], key: bytes) -> str:
    """HMAC-SHA256 over the files a restart applies (path, mode, content), in path order: stable for
    the same spec and Secrets, and useless for guessing a registry password without the key."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for path in sorted(p for p, f in files.items() if f.restart):
        f = files[path]
        for part in (path, oct(f.mode), f.content):
            data = part.encode()
            mac.update(len(data).to_bytes(8, "big") + data)
    return mac.hexdigest()


def _yaml(doc: Mapping[str, Any]) -> str:
    body = yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False) if doc else ""
    return f"{MARKER}\n{body}"


def _safe(host: str) -> str:
    """A registry host as a directory name (``*`` and ``:`` are fine in K3s but not in every shell)."""
    return host.replace("*", "_default").replace(":", "_")


@dataclass(frozen=True)
class NodeFiles:
    """A node's files and their digest (what the node's digest file says once they are applied)."""

    files: Mapping[str, NodeFile]
    digest: str
    server: str | None = None  # the join URL in JOIN_FILE: the installer then gets no --server/K3S_URL


def files_script(node: NodeFiles) -> list[str]:
    """Shell lines (sent on stdin: contents never reach a command line or a log) that put the files in
    place atomically with their mode, remove managed files the spec no longer wants (only those carrying
    the operator's marker: a registries.yaml written by hand stays) and record the digest."""
    lines = ["umask 077", f"rm -rf {REGISTRY_CERTS}"]
    for path in MANAGED:
        if path not in node.files:
            lines.append(f'if head -n 1 {path} 2>/dev/null | grep -qxF "{MARKER}"; then rm -f {path}; fi')
    for path in sorted(node.files):
        f = node.files[path]
        encoded = base64.b64encode(f.content.encode()).decode()
        directory = path.rsplit("/", 1)[0]
        lines += [
            f'mkdir -p {directory}; t="$(mktemp {path}.XXXXXX)"',
            f"printf '%s' '{encoded}' | base64 -d > \"$t\"",
            f'chmod {f.mode:04o} "$t"; mv -f "$t" {path}',
        ]
    return lines


def digest_script(digest: str) -> str:
    """Record what is applied (after K3s restarted and the node is Ready again)."""
    return f"umask 077; mkdir -p {K3S_DIR}; printf '%s\\n' {digest} > {DIGEST_FILE}\n"
