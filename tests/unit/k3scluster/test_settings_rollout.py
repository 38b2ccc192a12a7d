"""A settings change rolls through a Ready cluster one node per pass: servers first, each drained,
reconfigured (files + restart of its unit), Ready again, uncordoned, its digest recorded on the node.
Registries come from Secrets and never show in status or Events."""

from __future__ import annotations

import json
from typing import Any

import yaml

from k3s_deploy.metrics import REGISTRY
from k3s_deploy.services.k3scluster import node_config

from .test_reconcile import NS, World, cluster_body, cond

SERVERS = ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
AGENTS = ["10.0.0.13", "10.0.0.14"]


async def _ready(servers: int = 3, agents: int = 2) -> tuple[World, dict[str, Any]]:
    w, body = World(), cluster_body(servers, agents)
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    return w, body


def _change(body: dict[str, Any], **k3s: Any) -> None:
    body["spec"]["k3s"].update(k3s)
    body["metadata"]["generation"] += 1


def _restarts(w: World) -> list[tuple[str, str]]:
    return [(ip, unit) for ip, h in w.ssh.hosts.items() for unit in h.restarts]


async def test_an_args_change_rolls_one_node_per_pass_servers_first() -> None:
    w, body = await _ready()
    assert _restarts(w) == []  # installed with the files: nothing to roll out
    _change(
        body, serverArgs=["--disable=traefik", "--disable=servicelb"], agentArgs=["--kubelet-arg=max-pods=50"]
    )
    order: list[str] = []
    for _ in range(5):
        before = {ip: len(h.restarts) for ip, h in w.ssh.hosts.items()}
        out = await w.pass_(body)
        assert out.error is None, out.status["conditions"]
        changed = [ip for ip, h in w.ssh.hosts.items() if len(h.restarts) != before[ip]]
        assert len(changed) == 1, changed  # one node per pass
        order += changed
    assert order == [*SERVERS, *AGENTS]
    assert [u for ip in SERVERS for u in w.ssh.hosts[ip].restarts] == ["k3s"] * 3
    assert [u for ip in AGENTS for u in w.ssh.hosts[ip].restarts] == ["k3s-agent"] * 2
    agent = w.ssh.hosts[AGENTS[0]]
    assert yaml.safe_load(agent.files[node_config.CONFIG_FILE]) == {"kubelet-arg": ["max-pods=50"]}
    assert yaml.safe_load(w.ssh.hosts[SERVERS[0]].files[node_config.CONFIG_FILE]) == {
        "disable": ["traefik", "servicelb"]
    }
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True"
    assert len(_restarts(w)) == 5  # done: no more restarts
    digests = {n["name"]: n["configDigest"] for n in out.status["nodes"]}
    for n in out.status["nodes"]:
        host = w.ssh.hosts[n["ip"]]
        assert host.files[node_config.DIGEST_FILE].strip() == digests[n["name"]]
    events = [e.reason for e in out.events]
    assert "Reconfiguring" not in events


async def test_a_wiped_status_starts_no_rollout() -> None:
    w, body = await _ready(1, 1)
    body["status"] = {}
    for _ in range(2):
        out = await w.pass_(body)
    assert _restarts(w) == []
    assert all(n.get("configDigest") for n in out.status["nodes"])  # read back from the nodes


async def test_a_not_ready_server_holds_the_rollout() -> None:
    w, body = await _ready(3, 0)
    _change(body, serverArgs=["--disable=servicelb"])
    await w.pass_(body)  # server 0 done
    w.target.not_ready.add("demo-server-2")
    out = await w.pass_(body)
    assert [ip for ip, _ in _restarts(w)] == [SERVERS[0]]
    assert cond(out, "Reconciling")["reason"] == "Reconfiguring"
    assert "demo-server-2" in cond(out, "Reconciling")["message"]


async def test_registries_from_secrets_reach_every_node_0600_and_never_status_or_events() -> None:
    w, body = await _ready(1, 1)
    w.objects.secrets[(NS, "reg")] = {
        "data": {"username": b"puller", "password": b"hunter2-registry"},
        "labels": {},
        "owner": None,
    }
    registries = {
        "mirrors": [{"registry": "docker.io", "endpoints": ["https://mirror.example:5000"]}],
        "configs": [{"host": "mirror.example:5000", "authSecretRef": {"name": "reg"}}],
    }
    _change(body, registries=registries)
    outs = [await w.pass_(body) for _ in range(3)]
    for ip in ("10.0.0.10", "10.0.0.11"):
        host = w.ssh.hosts[ip]
        doc = yaml.safe_load(host.files[node_config.REGISTRIES_FILE])
        assert doc["configs"]["mirror.example:5000"]["auth"] == {
            "username": "puller",
            "password": "hunter2-registry",
        }
        assert host.modes[node_config.REGISTRIES_FILE] == 0o600
    for out in outs:
        said = json.dumps(out.status) + json.dumps([(e.reason, e.message) for e in out.events])
        assert "hunter2-registry" not in said


async def test_a_missing_registry_secret_stalls_with_its_name() -> None:
    w, body = await _ready(1, 0)
    _change(body, registries={"configs": [{"host": "ghcr.io", "authSecretRef": {"name": "nope"}}]})
    out = await w.pass_(body)
    stalled = cond(out, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SecretNotFound"
    assert "'nope'" in stalled["message"] and "ghcr.io" in stalled["message"]
    assert _restarts(w) == []


async def test_a_digest_file_the_guest_filled_with_junk_counts_as_not_applied() -> None:
    w, body = await _ready(1, 0)
    host = w.ssh.hosts["10.0.0.10"]
    host.files[node_config.DIGEST_FILE] = "\x1b[2J<b>not-a-digest</b>" + "a" * 80 + "\n"
    out = await w.pass_(body)
    # the junk is never copied into status; the node gets its files again and a fresh digest
    assert "not-a-digest" not in json.dumps(out.status)
    assert host.restarts == ["k3s"]
    assert out.status["nodes"][0]["configDigest"] == host.files[node_config.DIGEST_FILE].strip()


async def test_the_restart_is_counted_as_reconfigure_k3s() -> None:
    def count() -> float:
        labels = {"operation": "reconfigure_k3s", "result": "ok"}
        return REGISTRY.get_sample_value("k3sdeploy_ssh_operations_total", labels) or 0.0

    w, body = await _ready(1, 1)
    before = count()
    _change(body, agentArgs=["--kubelet-arg=max-pods=50"])
    await w.pass_(body)
    assert count() == before + 1
