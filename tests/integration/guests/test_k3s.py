"""The K3s stand-in: install, join, upgrade, uninstall, power, as seen through a real Kubernetes API."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml

from fixtures.guests import LabGuest

pytestmark = pytest.mark.integration

StartGuest = Callable[..., Awaitable[LabGuest]]
Kubectl = Callable[[str, str], Awaitable[tuple[int, str, str]]]
V1 = "v1.31.4+k3s1"
V2 = "v1.32.0+k3s1"


def pointed_at(k3s_yaml: str, address: str) -> str:
    """What the operator does with a copied k3s.yaml: point it at the server's address."""
    config = yaml.safe_load(k3s_yaml)
    config["clusters"][0]["cluster"]["server"] = f"https://{address}:6443"
    return yaml.safe_dump(config)


async def nodes(kubectl: Kubectl, kubeconfig: str) -> dict[str, dict[str, Any]]:
    code, out, err = await kubectl(kubeconfig, "get nodes -o json")
    assert code == 0, err
    return {item["metadata"]["name"]: item for item in json.loads(out)["items"]}


def ready(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_server_install_then_kubectl_lists_the_node_ready(
    start_guest: StartGuest, host_kubectl: Kubectl
) -> None:
    server = await start_guest(301, "127.0.31.1", name="srv-1")
    result = await server.install_k3s(
        "server", "--tls-san", "k3s.example.test", env=f"INSTALL_K3S_VERSION={V1}"
    )
    assert result.exit_status == 0, result.stderr
    assert f"[INFO]  Using {V1} as release" in result.stdout

    version = await server.run("k3s --version", check=True)
    assert re.fullmatch(
        r"k3s version v1\.31\.4\+k3s1 \([0-9a-f]{8}\)\ngo version go1\.\d+\.\d+\n", version.stdout
    )
    token = (await server.run("sudo cat /var/lib/rancher/k3s/server/node-token", check=True)).stdout.strip()
    assert re.fullmatch(r"K10[0-9a-f]{64}::server:[0-9a-f]{32}", token)
    scripts = await server.run("ls /usr/local/bin", check=True)
    assert {"k3s", "kubectl", "k3s-killall.sh", "k3s-uninstall.sh"} <= set(scripts.stdout.split())

    k3s_yaml = await server.read("/etc/rancher/k3s/k3s.yaml")
    assert "https://127.0.0.1:6443" in k3s_yaml
    listed = await nodes(host_kubectl, pointed_at(k3s_yaml, "127.0.31.1"))
    node = listed["srv-1"]
    assert ready(node) == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == V1
    labels = node["metadata"]["labels"]
    assert labels["node-role.kubernetes.io/control-plane"] == "true"
    assert labels["node-role.kubernetes.io/master"] == "true"
    assert "node-role.kubernetes.io/etcd" not in labels  # no --cluster-init: no embedded etcd

    in_guest = await server.run("sudo k3s kubectl get nodes --no-headers")
    assert in_guest.exit_status == 0, in_guest.stderr
    assert in_guest.stdout.split()[:2] == ["srv-1", "Ready"]
