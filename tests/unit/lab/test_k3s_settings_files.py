"""The K3s stand-in reads registries.yaml and config.yaml.d when K3s starts, as K3s does: malformed
registries.yaml stops the start, mirrors become containerd hosts.toml, a restart runs with the merged
config files (flags and the node-args annotation), a world-readable registries.yaml is logged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from k3s_deploy_lab.guests.k3s import settings_files as sf
from k3s_deploy_lab.guests.k3s.flags import DEFAULT_CHANNELS
from k3s_deploy_lab.guests.k3s.nodes import NodeRecord
from k3s_deploy_lab.guests.sandbox import GuestRoot


@dataclass
class FakeInstall:
    role: str
    args: list[str]
    flags: dict[str, Any] = field(default_factory=dict)


def _root(tmp_path: Path) -> GuestRoot:
    for d in ("etc", "var"):
        (tmp_path / d).mkdir()
    return GuestRoot(tmp_path)


def _write(root: GuestRoot, path: str, text: str, mode: int = 0o600) -> None:
    target = root.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mirrors:\n  docker.io\n    - https://m\n", "failed to load private registry configuration"),
        ("mirrors:\n  docker.io:\n    endpoint: https://m\n", "mirrors.docker.io.endpoint is not a list"),
        (
            "configs:\n  h:\n    tls:\n      insecure_skip_verify: maybe\n",
            "insecure_skip_verify is not a bool",
        ),
        ("- a list\n", "cannot unmarshal"),
    ],
)
def test_malformed_registries_yaml_stops_k3s_from_starting(tmp_path: Path, text: str, says: str) -> None:
    root = _root(tmp_path)
    _write(root, sf.REGISTRIES, text)
    problem = sf.at_start(root, "agent")
    assert problem is not None and says in problem


def test_mirrors_become_containerd_hosts_without_credentials(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _write(
        root,
        sf.REGISTRIES,
        "mirrors:\n  docker.io:\n    endpoint: [https://mirror.example:5000]\n"
        "configs:\n  mirror.example:5000:\n    auth: {username: u, password: pw-secret}\n",
    )
    assert sf.at_start(root, "agent") is None
    hosts = root.path(f"{sf.CERTS_D}/docker.io/hosts.toml").read_text()
    assert 'server = "https://registry-1.docker.io/v2"' in hosts
    assert '[host."https://mirror.example:5000/v2"]' in hosts
    assert "pw-secret" not in hosts
    assert not root.path("/var/log/k3s-agent.log").exists()  # 0600: nothing to report
    # the mirror goes away with registries.yaml at the next start
    root.path(sf.REGISTRIES).unlink()
    assert sf.at_start(root, "agent") is None
    assert not root.path(f"{sf.CERTS_D}/docker.io").exists()


def test_a_world_readable_registries_yaml_is_logged(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _write(root, sf.REGISTRIES, "mirrors: {}\n", mode=0o644)
    assert sf.at_start(root, "server") is None
    assert "readable by group or others (mode 0644)" in root.path("/var/log/k3s.log").read_text()


def test_a_restart_runs_with_the_config_files_as_they_are_now(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _write(root, sf.ENV_FILES["agent"], "K3S_URL=https://10.0.0.10:6443\nK3S_TOKEN=secret-token\n")
    _write(root, "/etc/rancher/k3s/config.yaml.d/50-k3s-deploy.yaml", "kubelet-arg: [max-pods=50]\n")
    install = FakeInstall("agent", ["agent", "--node-name", "a0"])
    node = NodeRecord(
        name="a0",
        role="agent",
        ip="10.0.0.20",
        internal_ip="10.0.0.20",
        version="v1.31.4+k3s1",
        instance_id="i",
    )
    assert sf.on_restart(root, install, node, DEFAULT_CHANNELS) is None
    assert install.flags["kubelet-arg"] == ["max-pods=50"]
    args = json.loads(node.annotations["k3s.io/node-args"])
    assert "max-pods=50" in args and "secret-token" not in args
    _write(root, "/etc/rancher/k3s/config.yaml.d/50-k3s-deploy.yaml", "kubelet-arg: [max-pods=80]\n")
    assert sf.on_restart(root, install, node, DEFAULT_CHANNELS) is None
    assert "max-pods=80" in node.annotations["k3s.io/node-args"]
    _write(root, "/etc/rancher/k3s/config.yaml.d/50-k3s-deploy.yaml", "- not a map\n")
    problem = sf.on_restart(root, install, node, DEFAULT_CHANNELS)
    assert problem is not None and "invalid config file" in problem
