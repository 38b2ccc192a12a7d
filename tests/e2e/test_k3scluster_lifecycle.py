"""K3sClusters end to end: the operator process, the Proxmox simulator, real SSH guests, the K3s stand-in."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _status(lab: Lab, name: str) -> dict[str, Any]:
    return dict((lab.get("k3sc", name) or {}).get("status") or {})


def test_single_server_cluster_ready_then_deleted(lab: Lab) -> None:
    lab.apply(lab.cluster("solo", servers=1, agents=0))
    started = time.monotonic()
    lab.wait_ready("solo", timeout=240)
    print(f"1 server Ready after {time.monotonic() - started:.1f}s")
    st = _status(lab, "solo")
    assert st["readyServers"] == 1 and st["readyAgents"] == 0 and st["phase"] == "Ready"
    assert st["initServer"] == "solo-server-0"
    node = st["nodes"][0]
    assert node["hostKeyFingerprint"].startswith("SHA256:") and node["k3sVersion"] == "v1.31.4+k3s1"
    assert st["serverURL"] == f"https://{node['ip']}:6443"
    # the kubeconfig Secret works with kubectl and shows the node Ready at the version
    nodes = json.loads(lab.target_kubectl("solo", "get", "nodes", "-o", "json"))["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["solo-server-0"]
    assert nodes[0]["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.4+k3s1"
    vmid = node["vmid"]
    assert vmid in lab.vms()
    # the version check asked the lab's channel server (the lab never reaches update.k3s.io)
    deadline = time.monotonic() + 60
    while not _status(lab, "solo").get("availableVersion") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _status(lab, "solo")["channelResolution"]["channel"] == "stable"

    lab.kubectl("delete", "k3sc", "solo", "-n", lab.namespace, "--timeout=120s")
    assert lab.get("pvm", "solo-server-0") is None
    assert lab.get("secret", "solo-kubeconfig") is None and lab.get("secret", "solo-token") is None
    assert lab.get("secret", "k3s-ssh-key") is not None, "user Secrets are never deleted"
    assert vmid not in lab.vms(), "a cloned VM is destroyed with its cluster (policy Delete)"


def test_ha_cluster_3_servers_2_agents(lab: Lab) -> None:
    lab.apply(lab.cluster("ha", servers=3, agents=2))
    started = time.monotonic()
    lab.wait_ready("ha", timeout=420)
    print(f"3+2 Ready after {time.monotonic() - started:.1f}s")
    st = _status(lab, "ha")
    assert (st["readyServers"], st["readyAgents"]) == (3, 2)
    nodes = json.loads(lab.target_kubectl("ha", "get", "nodes", "-o", "json"))["items"]
    names = sorted(n["metadata"]["name"] for n in nodes)
    assert names == ["ha-agent-0", "ha-agent-1", "ha-server-0", "ha-server-1", "ha-server-2"]
    assert all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in nodes
    )
    control_plane = [n for n in nodes if "node-role.kubernetes.io/control-plane" in n["metadata"]["labels"]]
    assert len(control_plane) == 3
    ips = {n["name"]: n["ip"] for n in st["nodes"]}
    assert len(set(ips.values())) == 5
    # placement: the three servers got a Proxmox node each, the agents were spread too
    hosts = {n["name"]: n["pveNode"] for n in st["nodes"]}
    assert sorted(hosts[f"ha-server-{i}"] for i in range(3)) == ["pve1", "pve2", "pve3"], hosts
    assert hosts["ha-agent-0"] != hosts["ha-agent-1"], hosts
    spread = lab.condition("ha", "Spread")
    assert spread is not None and spread["status"] == "True", spread
    # one K3s cluster was formed (one init), every server certificate covers every server address
    events = lab.events("ha", "Installing")
    inits = [e for e in events if "initialising the cluster" in e["message"]]
    assert len(inits) == 1 and "ha-server-0" in inits[0]["message"]


def test_discovery_by_tags_adopts_and_retains(lab: Lab) -> None:
    # The legacy VMs run with old cloud-init keys: stop them so they boot with the cluster's key.
    api = lab.sim.api()
    for node, vmid in (("pve1", 100), ("pve2", 101)):
        lab.sim.wait_task(api.nodes(node).qemu(vmid).status.stop.post())
    manifest = lab.cluster("legacy", servers=1, agents=0)
    spec = manifest["spec"]
    del spec["servers"]
    spec["discovery"] = {
        "tags": {"servers": ["k3s-server", "legacy"], "agents": ["k3s-agent", "legacy"]},
        "cloudInit": {"user": "ubuntu", "sshAuthorizedKeys": [lab.public_key]},
    }
    lab.apply(manifest)
    lab.wait_ready("legacy", timeout=300)
    st = _status(lab, "legacy")
    assert sorted(n["name"] for n in st["nodes"]) == [
        "legacy-agent-101",
        "legacy-agent-102",
        "legacy-server-100",
    ]
    assert all(n["adopted"] for n in st["nodes"])
    child = lab.get("pvm", "legacy-server-100")
    assert child["spec"]["deletionPolicy"] == "Retain"
    lab.kubectl("delete", "k3sc", "legacy", "-n", lab.namespace, "--timeout=120s")
    assert {100, 101, 102} <= set(lab.vms()), "adopted VMs are retained"


def test_discovery_by_locations(lab: Lab) -> None:
    api = lab.sim.api()
    lab.sim.wait_task(api.nodes("pve1").qemu(100).status.stop.post())
    manifest = lab.cluster("listed", servers=1, agents=0)
    spec = manifest["spec"]
    del spec["servers"]
    spec["discovery"] = {
        "locations": {"servers": ["pve1/100"], "agents": ["pve3/102"]},
        "cloudInit": {"user": "ubuntu", "sshAuthorizedKeys": [lab.public_key]},
    }
    lab.apply(manifest)
    lab.wait_ready("listed", timeout=300)
    names = sorted(n["name"] for n in _status(lab, "listed")["nodes"])
    assert names == ["listed-agent-102", "listed-server-100"]
