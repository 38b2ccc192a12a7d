"""How the K3s stand-in reads an install: the real script's command rules, K3s flags, config, tokens (pure)."""

from __future__ import annotations

import pytest

from k3s_deploy_lab.guests.k3s import tokens
from k3s_deploy_lab.guests.k3s.flags import UsageError, build_request


def test_command_defaults_like_get_k3s_io() -> None:
    assert build_request({}, [], []).command == "server"
    agent = build_request({"K3S_URL": "https://127.0.0.9:6443", "K3S_TOKEN": "x"}, [], [])
    assert (agent.command, agent.first("server"), agent.first("token")) == (
        "agent",
        "https://127.0.0.9:6443",
        "x",
    )
    explicit = build_request({"K3S_URL": "https://127.0.0.9:6443", "K3S_TOKEN": "x"}, ["server"], [])
    assert explicit.command == "server"
    with pytest.raises(UsageError, match="K3S_TOKEN or K3S_TOKEN_FILE is not defined"):
        build_request({"K3S_URL": "https://127.0.0.9:6443"}, [], [])
    with pytest.raises(UsageError, match="Only https://"):
        build_request({"K3S_URL": "http://127.0.0.9:6443", "K3S_TOKEN": "x"}, [], [])


def test_exec_args_flags_and_config_merge() -> None:
    req = build_request(
        {
            "INSTALL_K3S_EXEC": "server --cluster-init --tls-san a.example,b.example",
            "INSTALL_K3S_VERSION": "v1.30.8+k3s1",
        },
        ["-t", "tok", "--node-label=zone=a", "--node-label", "tier=x", "--write-kubeconfig-mode", "644"],
        [
            "node-label:\n  - from=config\ntls-san: [c.example]\nnode-name: from-config\n",
            "tls-san+: [d.example]\n",
        ],
    )
    assert req.command == "server" and req.version == "v1.30.8+k3s1"
    assert req.bool("cluster-init")
    assert req.first("token") == "tok"
    assert req.many("tls-san") == ["a.example", "b.example"]  # the command line replaces config values
    assert req.many("node-label") == ["zone=a", "tier=x"]
    assert req.first("node-name") == "from-config"
    assert req.first("write-kubeconfig-mode") == "644"
    assert "tok" not in req.redacted_args()
    from_config = build_request(
        {}, [], ["tls-san: [c.example]\nnode-label: [a=b]\n", "tls-san+: [d.example]\n"]
    )
    assert from_config.many("tls-san") == ["c.example", "d.example"]
    assert from_config.many("node-label") == ["a=b"]
    assert build_request({"INSTALL_K3S_CHANNEL": "latest"}, [], []).version == "v1.32.0+k3s1"
    with pytest.raises(UsageError, match="Download failed"):
        build_request({"INSTALL_K3S_CHANNEL": "no-such-channel"}, [], [])
    with pytest.raises(UsageError, match="flag needs an argument"):
        build_request({}, ["server", "--node-name"], [])


def test_tokens_in_the_real_format_and_checks() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nlab\n-----END CERTIFICATE-----\n"
    full = tokens.full_token(ca, "pw")
    assert (
        full.startswith("K10") and full.endswith("::server:pw") and len(full) == 3 + 64 + len("::server:pw")
    )
    tokens.check(full, cluster_ca_pem=ca, password="pw", server_url="https://h:6443")
    tokens.check("pw", cluster_ca_pem=ca, password="pw", server_url="https://h:6443")
    with pytest.raises(tokens.TokenError, match="401 Unauthorized"):
        tokens.check("nope", cluster_ca_pem=ca, password="pw", server_url="https://h:6443")
    with pytest.raises(tokens.TokenError, match="CA hash does not match"):
        tokens.check(
            tokens.full_token(b"other", "pw"), cluster_ca_pem=ca, password="pw", server_url="https://h:6443"
        )
    with pytest.raises(tokens.TokenError, match="failed to normalize"):
        tokens.parse("K10abc::nocolon")
