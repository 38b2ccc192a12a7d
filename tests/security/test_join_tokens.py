"""Attack tests for K3s join tokens (docs/security.md, "Host keys and join tokens").

- T1, root on an agent VM: everything an agent holds (its disk, the environment its installer ran
  with) must not give it the server token, which is full admin over the cluster and the key of its
  datastore. Agents join with their own agent token.
- T3/T1, someone answering at the server's address with another cluster's CA: a joining node holds
  the secure token, checks the CA hash before sending anything, and is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def _secret(lab: Lab, name: str) -> dict[str, str]:
    secret = lab.get("secret", name)
    assert secret is not None, f"no Secret {name}"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _root_of(lab: Lab, vmid: int) -> Path:
    guest = next(g for g in lab.sim.guests()["guests"] if g["vmid"] == vmid)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in guest["instanceId"])
    return Path(lab.sim.dir) / "guests" / "roots" / safe


def _files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        small = path.is_file() and not path.is_symlink() and path.stat().st_size < 8 * 1024 * 1024
        if small and needle in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return found


def _node(lab: Lab, cluster: str, name: str) -> dict[str, Any]:
    return next(n for n in lab.get("k3sc", cluster)["status"]["nodes"] if n["name"] == name)


def test_an_agent_holds_no_server_token(lab: Lab) -> None:
    lab.apply(lab.cluster("tok", servers=1, agents=1))
    lab.wait_ready("tok", timeout=300)
    tokens = _secret(lab, "tok-token")
    server_token, agent_password = tokens["token"], tokens["agentToken"]
    password = server_token.rsplit(":", 1)[1]
    assert server_token.startswith("K10") and "::server:" in server_token

    agent_root = _root_of(lab, _node(lab, "tok", "tok-agent-0")["vmid"])
    env_file = (agent_root / "etc/systemd/system/k3s-agent.service.env").read_text()
    assert f"::node:{agent_password}" in env_file
    # neither the secure server token nor its password anywhere on the agent's disk
    assert _files_holding(agent_root, password.encode()) == []
    # while the server has it where K3s keeps it (the scan does find what is there)
    server_root = _root_of(lab, _node(lab, "tok", "tok-server-0")["vmid"])
    assert "var/lib/rancher/k3s/server/token" in _files_holding(server_root, password.encode())


def test_a_join_with_another_clusters_ca_hash_is_refused(lab: Lab) -> None:
    lab.apply(lab.cluster("ca", servers=1, agents=0))
    lab.wait_ready("ca", timeout=300)
    tokens = _secret(lab, "ca-token")
    server_root = _root_of(lab, _node(lab, "ca", "ca-server-0")["vmid"])
    ca_pem = (server_root / "var/lib/rancher/k3s/server/tls/server-ca.crt").read_bytes()
    real_hash = hashlib.sha256(ca_pem).hexdigest()
    assert tokens["token"].startswith(f"K10{real_hash}::server:"), "the token pins the server's CA"

    # the pinned CA is not the one the server presents (a server of another cluster at its address)
    forged = {**tokens, "token": f"K10{'0' * 64}::server:" + tokens["token"].rsplit(":", 1)[1]}
    lab.kubectl("patch", "secret", "ca-token", "-n", lab.namespace, "--type=merge", "-p",
                json.dumps({"data": {k: base64.b64encode(v.encode()).decode() for k, v in forged.items()}}))  # fmt: skip
    cluster = lab.get("k3sc", "ca")
    spec = cluster["spec"]
    spec["agents"] = {"replicas": 1, "template": spec["servers"]["template"]}
    lab.kubectl("patch", "k3sc", "ca", "-n", lab.namespace, "--type=merge", "-p",
                json.dumps({"spec": {"agents": spec["agents"]}}))  # fmt: skip
    refused = lab.wait_condition("ca", "AgentsReady", status="False", timeout=240)
    deadline = time.monotonic() + 120
    while "token CA hash does not match" not in refused.get("message", "") and time.monotonic() < deadline:
        time.sleep(1)
        refused = lab.condition("ca", "AgentsReady") or {}
    assert "token CA hash does not match the Cluster CA certificate hash" in refused["message"], refused
    names = [
        n["metadata"]["name"]
        for n in json.loads(lab.target_kubectl("ca", "get", "nodes", "-o", "json"))["items"]
    ]
    assert names == ["ca-server-0"], "the agent never joined"
