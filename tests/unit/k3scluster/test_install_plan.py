from __future__ import annotations

import pytest

from k3s_deploy import errors
from k3s_deploy.services.k3scluster.install import (
    DOWNLOAD_FAILED,
    InstallSource,
    K3sSettings,
    NodeFacts,
    k3s_args,
    parse_version,
    plan,
    render_script,
    tls_sans,
    validate_version,
)

V = "v1.31.4+k3s1"


def nodes(servers: int, agents: int, installed: dict[str, str] | None = None) -> list[NodeFacts]:
    installed = installed or {}
    out = [
        NodeFacts(f"c-server-{i}", "server", f"10.0.0.{10 + i}", installed.get(f"c-server-{i}"))
        for i in range(servers)
    ]
    out += [
        NodeFacts(f"c-agent-{i}", "agent", f"10.0.0.{20 + i}", installed.get(f"c-agent-{i}"))
        for i in range(agents)
    ]
    return out


def test_fresh_ha_cluster_inits_first_then_joins_serially_then_agents_in_parallel() -> None:
    p = plan(nodes(3, 2), K3sSettings(version=V), init_server=None)
    assert p.init_server == "c-server-0"
    shape = [[(s.node, s.kind, s.join_url) for s in wave] for wave in p.waves]
    assert shape == [
        [("c-server-0", "init", None)],
        [("c-server-1", "join-server", "https://10.0.0.10:6443")],
        [("c-server-2", "join-server", "https://10.0.0.10:6443")],
        [("c-agent-0", "agent", "https://10.0.0.10:6443"), ("c-agent-1", "agent", "https://10.0.0.10:6443")],
    ]


def test_plan_lanes_init_then_serial_servers_beside_parallel_agents() -> None:
    p = plan(nodes(3, 2), K3sSettings(version=V), init_server=None)
    assert [(s.node, s.kind) for s in p.first] == [("c-server-0", "init")]
    assert [s.node for s in p.server_joins] == ["c-server-1", "c-server-2"]
    assert [s.node for s in p.agents] == ["c-agent-0", "c-agent-1"]
    resumed = plan(nodes(3, 2, {"c-server-0": V}), K3sSettings(version=V), init_server="c-server-0")
    assert resumed.first == () and len(resumed.server_joins) == 2 and len(resumed.agents) == 2


def test_single_server_has_no_cluster_init() -> None:
    p = plan(nodes(1, 0), K3sSettings(version=V), init_server=None)
    assert [(s.node, s.kind) for s in p.steps] == [("c-server-0", "single")]
    args = k3s_args(p.steps[0], K3sSettings(), node_ip="10.0.0.10", sans=["10.0.0.10"])
    assert "--cluster-init" not in args


def test_nodes_at_the_wanted_version_are_left_alone() -> None:
    everyone = {f"c-server-{i}": V for i in range(3)} | {"c-agent-0": V, "c-agent-1": V}
    p = plan(nodes(3, 2, everyone), K3sSettings(version=V), init_server="c-server-0")
    assert p.steps == []
    assert len(p.unchanged) == 5


def test_recorded_init_server_is_kept_after_restart() -> None:
    # The operator died after recording c-server-1 as init but before anything got installed.
    p = plan(nodes(3, 0), K3sSettings(version=V), init_server="c-server-1")
    assert p.waves[0][0].node == "c-server-1" and p.waves[0][0].kind == "init"
    assert all(s.join_url == "https://10.0.0.11:6443" for s in p.steps[1:])


def test_rebuilt_init_server_joins_the_existing_cluster() -> None:
    installed = {"c-server-1": V, "c-server-2": V, "c-agent-0": V}
    p = plan(nodes(3, 1, installed), K3sSettings(version=V), init_server="c-server-0")
    assert [(s.node, s.kind, s.join_url) for s in p.steps] == [
        ("c-server-0", "join-server", "https://10.0.0.11:6443")
    ]
    assert p.init_server == "c-server-0"


def test_partial_bootstrap_resumes_without_second_init() -> None:
    installed = {"c-server-0": V}
    p = plan(nodes(3, 2, installed), K3sSettings(version=V), init_server="c-server-0")
    kinds = [s.kind for s in p.steps]
    assert "init" not in kinds and kinds.count("join-server") == 2


def test_channel_accepts_any_installed_version() -> None:
    p = plan(nodes(1, 1, {"c-server-0": "v1.30.1+k3s1"}), K3sSettings(channel="stable"), init_server=None)
    assert [s.node for s in p.steps] == ["c-agent-0"]


def test_no_servers_is_invalid() -> None:
    with pytest.raises(errors.InvalidSpec):
        plan(nodes(0, 2), K3sSettings(version=V), init_server=None)


def test_server_without_address_waits() -> None:
    with pytest.raises(errors.GuestNotReady):
        plan(
            [NodeFacts("c-server-0", "server", None), NodeFacts("c-agent-0", "agent", "10.0.0.2")],
            K3sSettings(),
            init_server=None,
        )


def test_tls_sans_cover_servers_endpoint_and_extras() -> None:
    s = K3sSettings(
        endpoint="https://k3s.example.com:6443", tls_sans=("10.0.0.10", "[fd00::1]:6443", "alt.example")
    )
    assert tls_sans(s, ["10.0.0.10", "10.0.0.11"]) == [
        "10.0.0.10",
        "10.0.0.11",
        "k3s.example.com",
        "fd00::1",
        "alt.example",
    ]


def test_script_carries_token_in_env_and_args_pass_through() -> None:
    settings = K3sSettings(
        version=V,
        server_args=("--disable", "traefik"),
        agent_args=("--node-label", "x=y"),
        source=InstallSource(script_url="http://127.0.0.1:9/install.sh"),
    )
    p = plan(nodes(3, 1), settings, init_server=None)
    init = render_script(
        p.steps[0], settings, token="s3cr3t", node_ip="10.0.0.10", sans=["10.0.0.10", "10.0.0.11"]
    )
    assert "export K3S_TOKEN=s3cr3t" in init
    assert "export INSTALL_K3S_VERSION=v1.31.4+k3s1" in init
    assert "http://127.0.0.1:9/install.sh" in init
    assert f"exit {DOWNLOAD_FAILED}" in init
    last = init.strip().splitlines()[-1]
    assert last.startswith('sh "$installer" server --cluster-init --node-name c-server-0 --node-ip 10.0.0.10')
    assert "--tls-san 10.0.0.10 --tls-san 10.0.0.11 --disable traefik" in last
    assert "s3cr3t" not in last
    agent = render_script(p.steps[-1], settings, token="s3cr3t", node_ip="10.0.0.20", sans=[])
    assert "export K3S_URL=https://10.0.0.10:6443" in agent
    assert (
        agent.strip()
        .splitlines()[-1]
        .endswith("agent --node-name c-agent-0 --node-ip 10.0.0.20 --node-label x=y")
    )


def test_airgap_and_channel_script() -> None:
    settings = K3sSettings(
        channel="latest",
        channel_url="http://127.0.0.1:9/v1-release/channels",
        source=InstallSource(
            mode="airgap",
            script_url="http://mirror.local/install.sh",
            binary_url="http://mirror.local/k3s",
            images_url="http://mirror.local/k3s-airgap-images-amd64.tar.zst",
        ),
    )
    step = plan(nodes(1, 0), settings, init_server=None).steps[0]
    script = render_script(step, settings, token="t", node_ip=None, sans=[])
    assert "export INSTALL_K3S_CHANNEL=latest" in script
    assert "export INSTALL_K3S_CHANNEL_URL=http://127.0.0.1:9/v1-release/channels" in script
    assert "export INSTALL_K3S_SKIP_DOWNLOAD=true" in script
    assert "-o /usr/local/bin/k3s http://mirror.local/k3s" in script
    assert "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst" in script
    assert script.strip().splitlines()[-1] == 'sh "$installer" server --node-name c-server-0'


def test_script_quotes_hostile_values() -> None:
    settings = K3sSettings(server_args=("--node-label", "a=$(reboot)"))
    step = plan(nodes(1, 0), settings, init_server=None).steps[0]
    script = render_script(step, settings, token="x'; rm -rf /; '", node_ip=None, sans=[])
    assert "'a=$(reboot)'" in script
    assert "rm -rf /; '\"'\"'" in script


def test_versions() -> None:
    assert parse_version("k3s version v1.31.4+k3s1 (a1b2c3d4)\ngo version go1.22") == "v1.31.4+k3s1"
    assert parse_version("") is None
    validate_version("v1.31.4+k3s1")
    validate_version(None)
    with pytest.raises(errors.InvalidSpec) as info:
        validate_version("1.31")
    assert info.value.reason == "InvalidVersion"
