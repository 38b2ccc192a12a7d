"""A changed spec.endpoint (set, changed, unset) rolls out like other settings: each joined node's join
URL is a config.yaml.d file covered by its digest, so the rollout restarts it with the new URL, servers
first (their new TLS SAN), then agents, once the new endpoint answers. The init server joins nothing."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from k3s_deploy.services.k3scluster import endpoint, node_config

from .test_reconcile import NS, World, cluster_body, cond

SERVERS = ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
AGENT = "10.0.0.13"
KEY = b"k" * 32


@pytest.fixture(autouse=True)
def _fresh_process() -> None:
    endpoint._placed.clear()


def _join(w: World, ip: str) -> str | None:
    text = w.ssh.hosts[ip].files.get(node_config.JOIN_FILE)
    return None if text is None else str(yaml.safe_load(text)["server"])


def _restarts(w: World) -> dict[str, int]:
    return {ip: len(h.restarts) for ip, h in w.ssh.hosts.items()}


async def _ready(**spec: Any) -> tuple[World, dict[str, Any]]:
    w, body = World(), cluster_body(3, 1, **spec)
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    return w, body


async def _roll(w: World, body: dict[str, Any]) -> list[str]:
    """Passes until nothing restarts any more; the nodes restarted, in order (one per pass)."""
    order: list[str] = []
    for _ in range(7):
        before = _restarts(w)
        out = await w.pass_(body)
        assert out.error is None, out.status["conditions"]
        changed = [ip for ip, n in _restarts(w).items() if n != before[ip]]
        assert len(changed) <= 1, changed
        order += changed
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    return order


def test_the_join_url_is_a_file_in_the_digest() -> None:
    def files(server: str | None) -> dict[str, node_config.NodeFile]:
        return node_config.render(node_config.NodeSettings(role="agent", server=server))

    a, b = files("https://lb-a.example.internal:6443"), files("https://lb-b.example.internal:443")
    assert yaml.safe_load(b[node_config.JOIN_FILE].content) == {"server": "https://lb-b.example.internal:443"}
    assert b[node_config.JOIN_FILE].restart and b[node_config.JOIN_FILE].mode == 0o600
    assert node_config.digest(a, KEY) != node_config.digest(b, KEY)
    assert node_config.JOIN_FILE not in files(None)  # the init server
    assert node_config.digest(files(None), KEY) != node_config.digest(a, KEY)
    assert node_config.JOIN_FILE in node_config.MANAGED  # removed when the spec no longer wants it


async def test_a_changed_endpoint_rolls_out_servers_first_then_the_agent() -> None:
    w, body = await _ready(endpoint="lb-a.example.internal")
    assert [_join(w, ip) for ip in [*SERVERS, AGENT]] == [None, *["https://lb-a.example.internal:6443"] * 3]
    assert _restarts(w) == dict.fromkeys([*SERVERS, AGENT], 0)

    body["spec"]["endpoint"] = "lb-b.example.internal:443"
    body["metadata"]["generation"] += 1
    curls = len([x for x in w.ssh.log if x[1].startswith("curl ")])
    assert await _roll(w, body) == [*SERVERS, AGENT]
    new = "https://lb-b.example.internal:443"
    assert [_join(w, ip) for ip in [*SERVERS, AGENT]] == [None, new, new, new]
    for ip in SERVERS:  # the new SAN, from the same rollout
        config = yaml.safe_load(w.ssh.hosts[ip].files[node_config.CONFIG_FILE])
        assert "lb-b.example.internal" in config["tls-san"]
    # the new endpoint was seen answering before the agent restarted into it
    checks = [x for x in w.ssh.log if x[1].startswith("curl ")][curls:]
    assert checks and checks[0][1] == f"curl {new}/ping"
    kubeconfig = yaml.safe_load(w.objects.secrets[(NS, "demo-kubeconfig")]["data"]["value"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == new


async def test_the_agent_waits_while_the_new_endpoint_does_not_answer() -> None:
    w, body = await _ready(endpoint="lb-a.example.internal")
    body["spec"]["endpoint"] = "lb-b.example.internal"
    body["metadata"]["generation"] += 1
    w.ssh.endpoint_code = "000"
    for _ in range(4):
        out = await w.pass_(body)
    assert _restarts(w) == {**dict.fromkeys(SERVERS, 1), AGENT: 0}
    assert cond(out, "Reconciling")["reason"] == "WaitingForEndpoint"
    assert _join(w, AGENT) == "https://lb-a.example.internal:6443"
    w.ssh.endpoint_code = "200"
    assert await _roll(w, body) == [AGENT]
    assert _join(w, AGENT) == "https://lb-b.example.internal:6443"


async def test_setting_and_unsetting_the_endpoint_move_the_joiners() -> None:
    w, body = await _ready()
    init = "https://10.0.0.10:6443"
    assert [_join(w, ip) for ip in [*SERVERS, AGENT]] == [None, init, init, init]
    body["spec"]["endpoint"] = "10.0.0.200"
    body["spec"]["kubeVip"] = {}
    body["metadata"]["generation"] += 1
    assert await _roll(w, body) == [*SERVERS, AGENT]
    assert _join(w, AGENT) == _join(w, SERVERS[1]) == "https://10.0.0.200:6443"
    del body["spec"]["endpoint"], body["spec"]["kubeVip"]
    body["metadata"]["generation"] += 1
    assert await _roll(w, body) == [*SERVERS, AGENT]
    assert [_join(w, ip) for ip in [*SERVERS, AGENT]] == [None, init, init, init]


async def test_a_new_kube_vip_address_moves_the_manifest_and_the_joiners() -> None:
    w, body = await _ready(endpoint="10.0.0.200", kubeVip={})
    body["spec"]["endpoint"] = "10.0.0.201"
    body["metadata"]["generation"] += 1
    assert await _roll(w, body) == [*SERVERS, AGENT]
    assert _join(w, AGENT) == _join(w, SERVERS[2]) == "https://10.0.0.201:6443"
    for ip in SERVERS:  # every server's kube-vip manifest now holds the new address
        assert "value: 10.0.0.201" in w.ssh.hosts[ip].manifests[-1]
        assert "10.0.0.201" in yaml.safe_load(w.ssh.hosts[ip].files[node_config.CONFIG_FILE])["tls-san"]
