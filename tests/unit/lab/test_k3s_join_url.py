"""The K3s stand-in takes an agent's join URL as K3s does: the command line beats config.yaml.d, which
beats ``K3S_URL`` from the unit's env file, so a join file written on day 2 moves an agent installed
with ``K3S_URL`` at its next restart."""

from __future__ import annotations

from pathlib import Path

from k3s_deploy_lab.guests.k3s import settings_files as sf
from k3s_deploy_lab.guests.k3s.flags import DEFAULT_CHANNELS, build_request

from .test_k3s_settings_files import FakeInstall, _root, _write

JOIN = "/etc/rancher/k3s/config.yaml.d/40-k3s-deploy-join.yaml"


def test_config_beats_k3s_url_and_the_command_line_beats_config() -> None:
    env = {"K3S_URL": "https://old.example:6443", "K3S_TOKEN": "t", "INSTALL_K3S_VERSION": "v1.31.4+k3s1"}
    config = ["server: https://new.example:6443\n"]
    assert build_request(env, ["agent"], []).first("server") == "https://old.example:6443"
    assert build_request(env, ["agent"], config).first("server") == "https://new.example:6443"
    cli = ["server", "--server", "https://cli.example:6443"]
    assert build_request(env, cli, config).first("server") == "https://cli.example:6443"


def test_an_agent_restart_reads_the_join_file_written_since(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _write(root, sf.ENV_FILES["agent"], "K3S_URL=https://10.0.0.10:6443\nK3S_TOKEN=secret-token\n")
    install = FakeInstall("agent", ["agent", "--node-name", "a0"])
    assert sf.on_restart(root, install, None, DEFAULT_CHANNELS) is None
    assert install.flags["server"] == "https://10.0.0.10:6443"
    _write(root, JOIN, "server: https://lb.example.internal:6443\n")
    assert sf.on_restart(root, install, None, DEFAULT_CHANNELS) is None
    assert install.flags["server"] == "https://lb.example.internal:6443"
