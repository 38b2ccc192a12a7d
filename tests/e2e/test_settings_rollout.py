"""K3s settings roll out end to end: the operator writes config.yaml.d and registries.yaml on the
guests, restarts K3s one node at a time (server first), and the K3s stand-in runs with the new files.
The registry password reaches the guests' registries.yaml (0600) and nothing else."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
import yaml

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CONFIG = "/etc/rancher/k3s/config.yaml.d/50-k3s-deploy.yaml"
REGISTRIES = "/etc/rancher/k3s/registries.yaml"
HOSTS = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d/docker.io/hosts.toml"
PASSWORD = "registry-pw-8c1f27"  # the value the test hunts for


def _nodes(lab: Lab, name: str) -> dict[str, dict[str, Any]]:
    status = (lab.get("k3sc", name) or {}).get("status") or {}
    return {n["name"]: n for n in status.get("nodes") or []}


def _patch(lab: Lab, name: str, patch: dict[str, Any]) -> None:
    lab.kubectl("patch", "k3sc", name, "-n", lab.namespace, "--type", "merge", "-p", json.dumps(patch))


def _follow_digests(lab: Lab, name: str, before: dict[str, str], timeout: float = 180.0) -> list[str]:
    """Poll status until every node's digest moved; the order in which they moved (one per poll)."""
    order: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        moved = [n for n, node in _nodes(lab, name).items() if node.get("configDigest") != before[n]]
        new = [n for n in moved if n not in order]
        assert len(new) <= 1, f"{new} were reconfigured together"
        order += new
        if len(order) == len(before):
            return order
        time.sleep(0.2)
    raise AssertionError(f"only {order} were reconfigured; status {_nodes(lab, name)}")


async def test_args_and_a_registry_mirror_roll_out_one_node_at_a_time(lab: Lab) -> None:
    lab.apply(lab.cluster("cfg", servers=1, agents=1))
    lab.wait_ready("cfg", timeout=300)
    nodes = _nodes(lab, "cfg")
    server, agent = nodes["cfg-server-0"]["ip"], nodes["cfg-agent-0"]["ip"]
    before = {n: node["configDigest"] for n, node in nodes.items()}
    assert all(before.values()), nodes

    # 1. arguments: the server first, then the agent, each restarted with its new file
    _patch(
        lab,
        "cfg",
        {"spec": {"k3s": {"serverArgs": ["--disable=traefik"], "agentArgs": ["--kubelet-arg=max-pods=50"]}}},
    )
    started = time.monotonic()
    assert _follow_digests(lab, "cfg", before) == ["cfg-server-0", "cfg-agent-0"]
    print(f"args rolled out to 2 nodes in {time.monotonic() - started:.1f}s", flush=True)
    lab.wait_ready("cfg", timeout=120)
    assert yaml.safe_load(await lab.ssh(agent, f"sudo cat {CONFIG}")) == {"kubelet-arg": ["max-pods=50"]}
    assert yaml.safe_load(await lab.ssh(server, f"sudo cat {CONFIG}")) == {"disable": ["traefik"]}
    annotations = json.loads(lab.target_kubectl("cfg", "get", "node", "cfg-agent-0", "-o", "json"))[
        "metadata"
    ]["annotations"]
    assert "max-pods=50" in json.loads(annotations["k3s.io/node-args"])  # the restarted agent runs with it
    assert {e["message"].split()[5].rstrip(":") for e in lab.events("cfg", "Reconfiguring")} == {
        "cfg-server-0",
        "cfg-agent-0",
    }

    # 2. a registry mirror with credentials from a Secret
    lab.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mirror-auth", "namespace": lab.namespace},
            "type": "kubernetes.io/basic-auth",
            "data": {
                "username": base64.b64encode(b"puller").decode(),
                "password": base64.b64encode(PASSWORD.encode()).decode(),
            },
        }
    )
    before = {n: node["configDigest"] for n, node in _nodes(lab, "cfg").items()}
    registries = {
        "mirrors": [{"registry": "docker.io", "endpoints": ["https://mirror.lab.example:5000"]}],
        "configs": [{"host": "mirror.lab.example:5000", "authSecretRef": {"name": "mirror-auth"}}],
    }
    _patch(lab, "cfg", {"spec": {"k3s": {"registries": registries}}})
    started = time.monotonic()
    assert _follow_digests(lab, "cfg", before) == ["cfg-server-0", "cfg-agent-0"]
    print(f"registries rolled out to 2 nodes in {time.monotonic() - started:.1f}s", flush=True)
    lab.wait_ready("cfg", timeout=120)
    for ip in (server, agent):
        assert (await lab.ssh(ip, f"sudo stat -c %a {REGISTRIES}")).strip() == "600"
        doc = yaml.safe_load(await lab.ssh(ip, f"sudo cat {REGISTRIES}"))
        assert doc["configs"]["mirror.lab.example:5000"]["auth"] == {
            "username": "puller",
            "password": PASSWORD,
        }
        # the stand-in read it at the restart: containerd's hosts.toml for the mirror
        assert "https://mirror.lab.example:5000/v2" in await lab.ssh(ip, f"sudo cat {HOSTS}")
    said = json.dumps(lab.get("k3sc", "cfg")) + json.dumps(lab.events("cfg"))
    said += lab.operator.log_path.read_text(errors="replace")  # the operator's own log too
    assert PASSWORD not in said
    assert base64.b64encode(PASSWORD.encode()).decode() not in said

    # 3. status is a cache: wiped, it is read back from the nodes and nothing rolls out again
    digests = {n: node["configDigest"] for n, node in _nodes(lab, "cfg").items()}
    restarts = len(lab.events("cfg", "Reconfiguring"))
    lab.kubectl(
        "patch",
        "k3sc",
        "cfg",
        "-n",
        lab.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"nodes": None}}),
    )
    # wake the operator with a spec change that leaves the settings alone
    _patch(lab, "cfg", {"spec": {"upgrade": {"drain": {"timeoutSeconds": 301}}}})
    for _ in range(120):  # up to a minute for the status to come back
        if _nodes(lab, "cfg").keys() == digests.keys():
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(5)  # another pass or two
    assert {n: node.get("configDigest") for n, node in _nodes(lab, "cfg").items()} == digests
    assert len(lab.events("cfg", "Reconfiguring")) == restarts
