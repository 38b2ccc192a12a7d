"""What an install asks for: the real install script's environment and K3s's own flags and config file.

Mirrors https://get.k3s.io: the command comes from ``INSTALL_K3S_EXEC`` followed by the script's
arguments; when it starts with a flag, it is ``server`` unless ``K3S_URL`` is set (then ``agent``, which
needs ``K3S_TOKEN``/``K3S_TOKEN_FILE``). Flags use K3s's names (https://docs.k3s.io/cli/server,
https://docs.k3s.io/cli/agent) and may also come from ``/etc/rancher/k3s/config.yaml`` (flag names
without dashes), where command-line flags win.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

DEFAULT_CHANNELS = {"stable": "v1.31.4+k3s1", "latest": "v1.32.0+k3s1", "testing": "v1.32.0-rc2+k3s1"}
for _minor, _version in {
    "v1.29": "v1.29.12+k3s1",
    "v1.30": "v1.30.8+k3s1",
    "v1.31": "v1.31.4+k3s1",
    "v1.32": "v1.32.0+k3s1",
}.items():
    DEFAULT_CHANNELS[_minor] = _version
VERSION_RE = re.compile(r"^v1\.(2[4-9]|3[0-4])\.\d{1,2}(-rc\d+)?\+k3s[1-9]$")

BOOL_FLAGS = {
    "cluster-init",
    "cluster-reset",
    "disable-etcd",
    "disable-apiserver",
    "disable-controller-manager",
    "disable-scheduler",
    "disable-cloud-controller",
    "disable-kube-proxy",
    "disable-network-policy",
    "disable-helm-controller",
    "secrets-encryption",
    "embedded-registry",
    "docker",
    "prefer-bundled-bin",
    "rootless",
    "protect-kernel-defaults",
    "selinux",
    "debug",
    "flannel-ipv6-masq",
    "flannel-external-ip",
    "etcd-expose-metrics",
    "etcd-disable-snapshots",
    "etcd-s3",
    "supervisor-metrics",
    "with-node-id",
    "disable-default-registry-endpoint",
    "kubelet-arg-strict",
    "egress-selector-mode-strict",
}
SHORT = {"s": "server", "t": "token", "d": "data-dir", "i": "node-ip", "v": "v"}
LIST_FLAGS = {
    "tls-san",
    "node-label",
    "node-taint",
    "disable",
    "kube-apiserver-arg",
    "kubelet-arg",
    "kube-proxy-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "etcd-arg",
    "node-ip",
    "node-external-ip",
    "cluster-cidr",
    "service-cidr",
}
SECRET_FLAGS = {"token", "agent-token", "datastore-endpoint", "etcd-s3-secret-key", "vpn-auth"}


class UsageError(ValueError):
    """The installer or K3s would refuse these arguments; the message is the one it prints."""


@dataclass
class InstallRequest:
    command: str  # "server" | "agent"
    version: str
    flags: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)

    def first(self, name: str) -> str | None:
        value = self.flags.get(name)
        if isinstance(value, list):
            return str(value[-1]) if value else None
        return None if value is None else str(value)

    def many(self, name: str) -> list[str]:
        value = self.flags.get(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            out += [part.strip() for part in str(item).split(",")] if name == "tls-san" else [str(item)]
        return [item for item in out if item]

    def bool(self, name: str) -> bool:
        return bool(self.flags.get(name))

    def redacted_flags(self) -> dict[str, Any]:
        """The merged flags with secrets shown as K3s shows them (``********``)."""
        return {k: "********" if k in SECRET_FLAGS else v for k, v in self.flags.items()}

    def redacted_args(self) -> list[str]:
        """The node-args annotation value: K3s hides secrets the same way."""
        out: list[str] = [self.command]
        for key, value in self.flags.items():
            for item in value if isinstance(value, list) else [value]:
                out += [f"--{key}", "********" if key in SECRET_FLAGS else str(item)]
        return out


def parse_flags(args: list[str]) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise UsageError(f"Incorrect Usage: unexpected argument {arg!r}")
        name, eq, value = arg.lstrip("-").partition("=")
        name = SHORT.get(name, name)
        val: Any
        if eq:
            val = value
        elif name in BOOL_FLAGS:
            val = True
        elif i < len(args):
            val = args[i]
            i += 1
        else:
            raise UsageError(f"Incorrect Usage: flag needs an argument: -{name}")
        if name in LIST_FLAGS:
            flags.setdefault(name, []).append(val)
        else:
            flags[name] = val
    return flags


def merge_config(config_texts: list[str], cli: dict[str, Any]) -> dict[str, Any]:
    """config.yaml, then config.yaml.d/*.yaml in order, then the command line (K3s's rules).

    A later value replaces an earlier one; in a config file a key ending in ``+`` appends to a list
    instead. Command-line flags replace config values.
    """
    merged: dict[str, Any] = {}
    for text in config_texts:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise UsageError("invalid config file: expected a YAML map of flag names")
        for raw_key, value in data.items():
            key = str(raw_key).rstrip("+")
            items = [str(v) for v in value] if isinstance(value, list) else value
            if str(raw_key).endswith("+") and key in merged:
                base = merged[key] if isinstance(merged[key], list) else [merged[key]]
                merged[key] = [*base, *(items if isinstance(items, list) else [items])]
            else:
                merged[key] = items
    merged.update(cli)
    return merged


def build_request(
    env: dict[str, str],
    argv: list[str],
    config_texts: list[str],
    channels: dict[str, str] | None = None,
) -> InstallRequest:
    """Decide command, version and flags exactly as the install script and K3s do."""
    args = shlex.split(env.get("INSTALL_K3S_EXEC", "")) + list(argv)
    url = env.get("K3S_URL", "")
    if args and not args[0].startswith("-"):
        command, rest = args[0], args[1:]
    elif url:
        if not env.get("K3S_TOKEN") and not env.get("K3S_TOKEN_FILE"):
            raise UsageError(
                "Defaulted k3s exec command to 'agent' because K3S_URL is defined, but K3S_TOKEN "
                "or K3S_TOKEN_FILE is not defined."
            )
        command, rest = "agent", args
    else:
        command, rest = "server", args
    if command not in ("server", "agent"):
        raise UsageError(f"Only 'server' and 'agent' are supported by this lab installer, not {command!r}")
    if url and not re.match(r"^https://", url):
        raise UsageError(f"Only https:// URLs are supported for K3S_URL (have {url})")
    flags = merge_config(config_texts, parse_flags(rest))
    if url and "server" not in flags:
        flags["server"] = url
    for env_name, flag in (
        ("K3S_TOKEN", "token"),
        ("K3S_AGENT_TOKEN", "agent-token"),
        ("K3S_NODE_NAME", "node-name"),
        ("K3S_KUBECONFIG_MODE", "write-kubeconfig-mode"),
        ("K3S_TOKEN_FILE", "token-file"),
    ):
        if env.get(env_name) and flag not in flags:
            flags[flag] = env[env_name]
    version = env.get("INSTALL_K3S_VERSION", "").strip()
    if not version:
        channel = env.get("INSTALL_K3S_CHANNEL", "stable").strip() or "stable"
        version = (DEFAULT_CHANNELS if channels is None else channels).get(channel, "")
        if not version:
            raise UsageError("Download failed")
    return InstallRequest(command=command, version=version, flags=flags, env=env, args=args)
