"""The K3s stand-in: install, join, upgrade, uninstall, power, as seen through a real Kubernetes API."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncssh
import pytest

from fixtures.guests import (
    FakeGuestsEndpoint,
    Kubectl,
    LabGuest,
    eventually,
    lab_net,
    nodes,
    pointed_at,
    ready,
    wait_for_guest,
)
from k3s_deploy_lab.controlplane.processes import free_port
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()

StartGuest = Callable[..., Awaitable[LabGuest]]
V1 = "v1.31.4+k3s1"
V2 = "v1.32.0+k3s1"


async def test_server_install_then_kubectl_lists_the_node_ready(
    start_guest: StartGuest, host_kubectl: Kubectl
) -> None:
    server = await start_guest(301, f"{NET}1", name="srv-1")
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
    listed = await nodes(host_kubectl, pointed_at(k3s_yaml, f"{NET}1"))
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


async def test_ha_join_agents_wrong_token_upgrade_cordon_uninstall(
    start_guest: StartGuest, guest_feed: FakeGuestsEndpoint, guests: GuestsService, host_kubectl: Kubectl
) -> None:
    init = await start_guest(311, f"{NET}11", name="srv-a")
    joiner = await start_guest(312, f"{NET}12", name="srv-b")
    agent = await start_guest(313, f"{NET}13", name="agent-a")
    intruder = await start_guest(314, f"{NET}14", name="agent-x")
    env = f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=s3cret-lab-token"
    first = await init.install_k3s("server", "--cluster-init", "--tls-san", f"{NET}11", env=env)
    assert first.exit_status == 0, first.stderr
    token = (await init.run("sudo cat /var/lib/rancher/k3s/server/node-token", check=True)).stdout.strip()
    assert token.endswith("::server:s3cret-lab-token")

    url = f"K3S_URL=https://{NET}11:6443"
    joined = await joiner.install_k3s(
        "server",
        "--server",
        f"https://{NET}11:6443",
        "--node-label",
        "zone=b",
        env=f"INSTALL_K3S_VERSION={V1} K3S_TOKEN={token}",
    )
    assert joined.exit_status == 0, joined.stderr
    as_agent = await agent.install_k3s(
        "--node-taint",
        "dedicated=edge:NoSchedule",
        env=f"INSTALL_K3S_VERSION={V1} {url} K3S_TOKEN=s3cret-lab-token",
    )
    assert as_agent.exit_status == 0, as_agent.stderr
    assert (await agent.run("test -x /usr/local/bin/k3s-agent-uninstall.sh")).exit_status == 0
    assert (await agent.run("test -e /etc/rancher/k3s/k3s.yaml")).exit_status == 1

    wrong = await intruder.install_k3s(env=f"INSTALL_K3S_VERSION={V1} {url} K3S_TOKEN=not-the-token")
    assert wrong.exit_status != 0
    assert "Job for k3s-agent.service failed" in wrong.stderr
    assert "401 Unauthorized" in wrong.stderr
    bad_hash = await intruder.install_k3s(
        env=f"INSTALL_K3S_VERSION={V1} {url} K3S_TOKEN=K10{'0' * 64}::server:x"
    )
    assert "token CA hash does not match the Cluster CA certificate hash" in bad_hash.stderr
    nowhere = await intruder.install_k3s(
        env=f"INSTALL_K3S_VERSION={V1} K3S_URL=https://{NET}99:6443 K3S_TOKEN=x"
    )
    assert nowhere.exit_status != 0
    assert "connect: connection refused" in nowhere.stderr
    no_token = await intruder.install_k3s(env=f"INSTALL_K3S_VERSION={V1} {url}")
    assert no_token.exit_status != 0
    assert "K3S_TOKEN or K3S_TOKEN_FILE is not defined" in no_token.stderr
    bad_version = await intruder.install_k3s(env=f"INSTALL_K3S_VERSION=v9.9.9+k3s1 {url} K3S_TOKEN={token}")
    assert bad_version.exit_status != 0
    assert "Download failed" in bad_version.stderr

    # The joined server answers the API at its own address, with a certificate for it.
    kubeconfig = pointed_at(await joiner.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}12")
    listed = await nodes(host_kubectl, kubeconfig)
    assert set(listed) == {"srv-a", "srv-b", "agent-a"}
    assert all(ready(n) == "True" for n in listed.values())
    assert listed["srv-b"]["metadata"]["labels"]["node-role.kubernetes.io/etcd"] == "true"
    assert listed["srv-b"]["metadata"]["labels"]["zone"] == "b"
    assert "node-role.kubernetes.io/control-plane" not in listed["agent-a"]["metadata"]["labels"]
    assert listed["agent-a"]["spec"]["taints"] == [
        {"key": "dedicated", "value": "edge", "effect": "NoSchedule"}
    ]
    assert "s3cret" not in json.dumps(listed)

    # Upgrade one node by re-running the installer with another version.
    upgraded = await agent.install_k3s(env=f"INSTALL_K3S_VERSION={V2} {url} K3S_TOKEN={token}")
    assert upgraded.exit_status == 0, upgraded.stderr
    assert (await agent.run("k3s --version", check=True)).stdout.startswith(f"k3s version {V2} ")
    listed = await nodes(host_kubectl, kubeconfig)
    assert listed["agent-a"]["status"]["nodeInfo"]["kubeletVersion"] == V2
    assert listed["srv-a"]["status"]["nodeInfo"]["kubeletVersion"] == V1

    # A drained (cordoned) node shows as such, and stays so across heartbeats and re-installs.
    code, _, err = await host_kubectl(kubeconfig, "cordon agent-a")
    assert code == 0, err
    assert (await agent.install_k3s(env=f"INSTALL_K3S_VERSION={V2} {url} K3S_TOKEN={token}")).exit_status == 0
    code, out, _ = await host_kubectl(kubeconfig, "get node agent-a --no-headers")
    assert out.split()[1] == "Ready,SchedulingDisabled"

    # Uninstall removes the Node and the files.
    gone = await agent.run("sudo /usr/local/bin/k3s-agent-uninstall.sh")
    assert gone.exit_status == 0, gone.stderr
    assert (await agent.run("test -e /usr/local/bin/k3s")).exit_status == 1
    assert set(await nodes(host_kubectl, kubeconfig)) == {"srv-a", "srv-b"}


async def test_vm_stop_makes_the_node_not_ready_and_start_ready_again(
    start_guest: StartGuest, guest_feed: FakeGuestsEndpoint, guests: GuestsService, host_kubectl: Kubectl
) -> None:
    server = await start_guest(321, f"{NET}21", name="srv-p")
    agent = await start_guest(322, f"{NET}22", name="agent-p")
    assert (await server.install_k3s(env=f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=t0k")).exit_status == 0
    joined = await agent.install_k3s(
        env=f"INSTALL_K3S_VERSION={V1} K3S_URL=https://{NET}21:6443 K3S_TOKEN=t0k"
    )
    assert joined.exit_status == 0, joined.stderr
    kubeconfig = pointed_at(await server.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}21")
    assert ready((await nodes(host_kubectl, kubeconfig))["agent-p"]) == "True"

    await guest_feed.stop_vm(322)
    await wait_for_guest(guests, 322, present=False)

    async def agent_ready_is(value: str) -> bool:
        return ready((await nodes(host_kubectl, kubeconfig))["agent-p"]) == value

    await eventually(lambda: agent_ready_is("Unknown"))
    _code, out, _ = await host_kubectl(kubeconfig, "get node agent-p --no-headers")
    assert out.split()[1] == "NotReady"

    await guest_feed.start_vm(322)
    await wait_for_guest(guests, 322)
    await eventually(lambda: agent_ready_is("True"))

    # k3s-killall.sh stops the service: NotReady until K3s is started again.
    assert (await agent.run("sudo k3s-killall.sh")).exit_status == 0
    await eventually(lambda: agent_ready_is("Unknown"))
    inactive = await agent.run("systemctl is-active k3s-agent")
    assert (inactive.exit_status, inactive.stdout) == (3, "inactive\n")
    assert (await agent.run("sudo systemctl start k3s-agent")).exit_status == 0
    await eventually(lambda: agent_ready_is("True"))
    status = await agent.run("systemctl status k3s-agent.service")
    assert status.exit_status == 0 and "Active: active (running)" in status.stdout
    assert (await agent.run("sudo systemctl stop k3s-agent")).exit_status == 0
    await eventually(lambda: agent_ready_is("Unknown"))
    assert (await agent.run("systemctl start k3s")).exit_status == 5  # not this node's unit
    assert (await agent.run("systemctl status ssh")).exit_status == 1  # no systemd in a lab guest


async def test_clusters_survive_a_restart_of_the_guests_process(
    tmp_path: Path, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey, host_kubectl: Kubectl
) -> None:
    def service() -> GuestsService:
        return GuestsService(
            pve_json=tmp_path / "pve.json", state_dir=tmp_path / "guests", ssh_port=free_port()
        )

    await guest_feed.run_vm(331, f"{NET}31", keys=[client_key.export_public_key().decode()], name="srv-r")
    async with service().running() as first:
        await wait_for_guest(first, 331)
        server = LabGuest(first, f"{NET}31", client_key)
        assert (await server.install_k3s("--cluster-init", env=f"INSTALL_K3S_VERSION={V1}")).exit_status == 0
        kubeconfig = pointed_at(await server.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}31")
        code, _, err = await host_kubectl(kubeconfig, "create namespace kept")
        assert code == 0, err
    code, _, _ = await host_kubectl(kubeconfig, "get nodes")
    assert code != 0  # the API went away with the process

    async with service().running():
        listed = await nodes(host_kubectl, kubeconfig)
        assert ready(listed["srv-r"]) == "True"
        code, _, err = await host_kubectl(kubeconfig, "get namespace kept")
        assert code == 0, err


async def test_air_gapped_install_uses_the_binary_in_place(
    start_guest: StartGuest, guests: GuestsService, host_kubectl: Kubectl
) -> None:
    assert guests.k3s is not None
    server = await start_guest(341, f"{NET}41", name="srv-air")
    missing = await server.install_k3s(env="INSTALL_K3S_SKIP_DOWNLOAD=true")
    assert missing.exit_status != 0
    assert "Executable k3s binary not found at /usr/local/bin/k3s" in missing.stderr
    binary = f"{guests.http_url}/k3s/releases/download/v1.30.8+k3s1/k3s"
    fetched = await server.run(
        f"sudo curl -sfL -o /usr/local/bin/k3s {binary} && sudo chmod 0755 /usr/local/bin/k3s"
    )
    assert fetched.exit_status == 0, fetched.stderr
    result = await server.install_k3s("server", "--node-ip", f"{NET}41", env="INSTALL_K3S_SKIP_DOWNLOAD=true")
    assert result.exit_status == 0, result.stderr
    assert (await server.run("k3s --version", check=True)).stdout.startswith("k3s version v1.30.8+k3s1 (")
    node = (
        await nodes(host_kubectl, pointed_at(await server.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}41"))
    )["srv-air"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.30.8+k3s1"
    assert {"type": "InternalIP", "address": f"{NET}41"} in node["status"]["addresses"]


async def test_channel_installs_follow_what_the_lab_publishes(
    start_guest: StartGuest, guests: GuestsService
) -> None:
    url = f"{guests.http_url}/v1-release/channels"
    async with aiohttp.ClientSession() as http:
        async with http.put(url, json={"stable": "v1.31.5+k3s1"}) as resp:
            assert resp.status == 200
        async with http.put(url, json={"stable": "not-a-version"}) as resp:
            assert resp.status == 400
        async with http.get(url) as resp:
            listed = {c["name"]: c["latest"] for c in (await resp.json())["data"]}
    assert listed["stable"] == "v1.31.5+k3s1"
    server = await start_guest(351, f"{NET}51", name="srv-chan")
    result = await server.install_k3s(env="INSTALL_K3S_CHANNEL=stable")
    assert result.exit_status == 0, result.stderr
    assert "[INFO]  Using v1.31.5+k3s1 as release" in result.stdout
    assert (await server.run("k3s --version", check=True)).stdout.startswith("k3s version v1.31.5+k3s1 (")
