"""Lab component `cluster`: apply a sample 3-server + 2-agent K3sCluster and follow it until Ready.

Creates (in namespace ``k3s-lab``) the Proxmox credentials Secret from the simulator's facts, an SSH
key pair (private half in a Secret and in DIR/cluster/id_ed25519), and the K3sCluster pointing the
K3s installer at the lab's stand-in. Progress (phase, steps, nodes) is printed as it changes; once
Ready it prints ``kubectl get`` of the result and how to use the cluster's kubeconfig. The helpers
here are also what the e2e tests use to build their clusters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from k3s_deploy_lab.operator_component import kubectl

if TYPE_CHECKING:
    from k3s_deploy_lab.stack import LabContext

NAMESPACE = "k3s-lab"
CLUSTER = "lab"
K3S_VERSION = "v1.31.4+k3s1"
TEMPLATE = "ubuntu-2404-cloud-shared"
PVE_NODES = ["pve1", "pve2", "pve3"]
READY_TIMEOUT = float(os.environ.get("K3SD_LAB_READY_TIMEOUT", "1200"))


def new_ssh_key() -> tuple[str, str]:
    """(OpenSSH private key, public key line) of a fresh ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " k3s-deploy-lab"


def secret_manifest(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def lab_secrets(pve: dict[str, Any], namespace: str, private_key: str) -> list[dict[str, Any]]:
    """The Proxmox credentials Secret (token, CA of the simulator) and the SSH key Secret."""
    creds = {
        "url": pve["url"],
        "tokenId": pve["tokenId"],
        "tokenSecret": pve["tokenSecret"],
        "caCert": Path(pve["caCert"]).read_text(),
    }
    return [
        secret_manifest("proxmox-credentials", namespace, creds),
        secret_manifest("k3s-ssh-key", namespace, {"ssh-privatekey": private_key}),
    ]


def node_template(public_key: str, *, user: str = "ubuntu") -> dict[str, Any]:
    return {
        "allowedNodes": PVE_NODES,
        # the default, said out loud: one server per node (the template is on shared storage, so every
        # node can take a clone of it)
        "placement": "Spread",
        "clone": {"template": {"name": TEMPLATE}, "full": False},
        "resources": {"cores": 2, "memoryMiB": 2048},
        "cloudInit": {"user": user, "sshAuthorizedKeys": [public_key]},
    }


def vip_address(pve: dict[str, Any]) -> str:
    """A control-plane VIP for the lab: the last address of the guests' DHCP range (DHCP hands out
    the lowest free ones, so a lab never gives it to a VM)."""
    network = ipaddress.IPv4Network(pve.get("dhcpRange") or "127.1.0.0/16")
    return str(network.broadcast_address - 1)


def endpoint_spec(pve: dict[str, Any]) -> dict[str, Any]:
    """spec.endpoint with kube-vip on the lab's VIP (the guests emulate kube-vip's leader election)."""
    return {"endpoint": vip_address(pve), "kubeVip": {}}


def cluster_manifest(
    pve: dict[str, Any],
    public_key: str,
    *,
    name: str = CLUSTER,
    namespace: str = NAMESPACE,
    servers: int = 3,
    agents: int = 2,
    user: str = "ubuntu",
    version: str = K3S_VERSION,
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A K3sCluster cloning its VMs in the lab, installing K3s from the lab's installer."""
    spec: dict[str, Any] = {
        "credentialsRef": {"name": "proxmox-credentials"},
        "k3s": {
            "version": version,
            "installSource": {"script": {"url": pve["k3sInstallUrl"]}},
            # The lab's own release channels: the lab never reaches update.k3s.io.
            "channelServer": pve["k3sChannelUrl"],
        },
        "ssh": {
            "user": user,
            "port": int(pve["guestSshPort"]),
            "privateKeySecretRef": {"name": "k3s-ssh-key", "key": "ssh-privatekey"},
            # host keys read through the simulator's guest agent, never trusted on first use
            "hostKeyPolicy": "GuestAgent",
        },
        "servers": {"replicas": servers, "template": node_template(public_key, user=user)},
    }
    if agents:
        spec["agents"] = {"replicas": agents, "template": node_template(public_key, user=user)}
    spec.update(extra_spec or {})
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "K3sCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def apply(kubeconfig: Path, *objects: dict[str, Any]) -> None:
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(list(objects)))


def get_json(kubeconfig: Path, *args: str) -> Any:
    out = kubectl(kubeconfig, "get", *args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def describe_progress(cluster: dict[str, Any]) -> list[str]:
    """Human lines for the cluster's current status (what the lab prints when it changes)."""
    status = cluster.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    steps = []
    for type_ in ("VMsReady", "ServersReady", "AgentsReady", "Ready"):
        c = conditions.get(type_)
        mark = {"True": "ok", "False": "no"}.get((c or {}).get("status", ""), "..")
        steps.append(f"{type_}={mark}")
    lines = [f"phase {status.get('phase', 'Pending')}: " + " ".join(steps)]
    for key in ("Stalled", "Reconciling"):
        c = conditions.get(key)
        if c and c.get("status") == "True":
            lines.append(f"  {key}: {c.get('reason')}: {c.get('message', '')[:200]}")
    for node in status.get("nodes") or []:
        lines.append(
            f"  {node['name']:<16} {node.get('role', ''):<6} {node.get('ip', '-'):<15} "
            f"{node.get('state', ''):<12} {node.get('k3sVersion', '')}"
            + (f"  ({node['message'][:80]})" if node.get("message") else "")
        )
    return lines


def wait_ready(
    kubeconfig: Path,
    name: str,
    namespace: str,
    *,
    timeout: float = READY_TIMEOUT,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll the K3sCluster, printing progress when it changes, until Ready=True (or raise)."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last: list[str] = []
    while time.monotonic() < deadline:
        cluster = get_json(kubeconfig, "k3sc", name, "-n", namespace) or {}
        lines = describe_progress(cluster)
        if lines != last:
            log(f"[{time.monotonic() - started:6.1f}s] " + "\n".join(lines))
            last = lines
        ready = next(
            (c for c in (cluster.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"),
            None,
        )
        if ready and ready.get("status") == "True":
            return cluster
        time.sleep(1.0)
    raise TimeoutError(f"K3sCluster {namespace}/{name} not Ready after {timeout:.0f}s:\n" + "\n".join(last))


def save_kubeconfig(kubeconfig: Path, name: str, namespace: str, dest: Path) -> Path:
    secret = get_json(kubeconfig, "secret", f"{name}-kubeconfig", "-n", namespace)
    if not secret:
        raise RuntimeError(f"Secret {namespace}/{name}-kubeconfig not found")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(base64.b64decode(secret["data"]["value"]))
    dest.chmod(0o600)
    return dest


def _bring_up(ctx: LabContext, kubeconfig: Path) -> None:
    pve = ctx.facts["pve"]
    work = ctx.dir / "cluster"
    work.mkdir(parents=True, exist_ok=True)
    key_path = work / "id_ed25519"
    if key_path.exists():
        private, public = key_path.read_text(), (work / "id_ed25519.pub").read_text().strip()
    else:
        private, public = new_ssh_key()
        key_path.write_text(private)
        key_path.chmod(0o600)
        (work / "id_ed25519.pub").write_text(public + "\n")
    kubectl(kubeconfig, "create", "namespace", NAMESPACE, check=False)
    apply(kubeconfig, *lab_secrets(pve, NAMESPACE, private))
    # servers spread over pve1..pve3 (the template's placement) behind a kube-vip address
    manifest = cluster_manifest(pve, public, extra_spec=endpoint_spec(pve))
    (work / "k3scluster.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    apply(kubeconfig, manifest)
    ctx.log(
        f"applied K3sCluster {NAMESPACE}/{CLUSTER} (3 servers, 2 agents, endpoint {manifest['spec']['endpoint']} "
        "by kube-vip); following its progress"
    )
    started = time.monotonic()
    wait_ready(kubeconfig, CLUSTER, NAMESPACE, log=ctx.log)
    elapsed = time.monotonic() - started
    user_kubeconfig = save_kubeconfig(kubeconfig, CLUSTER, NAMESPACE, work / f"{CLUSTER}.kubeconfig")
    overview = kubectl(kubeconfig, "get", "k3sclusters,proxmoxvms", "-n", NAMESPACE, "-o", "wide")
    nodes = kubectl(user_kubeconfig, "get", "nodes", "-o", "wide", check=False)
    ctx.facts["cluster"] = {
        "namespace": NAMESPACE,
        "name": CLUSTER,
        "kubeconfig": str(user_kubeconfig),
        "readySeconds": round(elapsed, 1),
        "sshKey": str(key_path),
    }
    summary = (
        f"K3sCluster {CLUSTER} is Ready after {elapsed:.0f}s\n\n{overview}\n{nodes}\n"
        f"Use it:\n  kubectl --kubeconfig {user_kubeconfig} get nodes\n"
        f"  (or: kubectl -n {NAMESPACE} get secret {CLUSTER}-kubeconfig -o jsonpath='{{.data.value}}' "
        "| base64 -d > lab.kubeconfig)\n"
        f"Log in to a node:\n  ssh -i {key_path} -p {pve['guestSshPort']} ubuntu@<node ip from the table>"
    )
    # With `lab up --detach` the progress goes to DIR/lab.log; the summary is kept here too.
    (work / "summary.txt").write_text(summary + "\n")
    ctx.facts["cluster"]["summary"] = str(work / "summary.txt")
    ctx.log(summary)


@contextlib.asynccontextmanager
async def lab_component(ctx: LabContext) -> AsyncIterator[None]:
    kubeconfig = ctx.kubeconfig or (Path(ctx.facts["kubeconfig"]) if ctx.facts.get("kubeconfig") else None)
    if kubeconfig is None or "pve" not in ctx.facts or "guestSshPort" not in ctx.facts["pve"]:
        raise RuntimeError("the cluster component needs controlplane, pve, guests and operator")
    await asyncio.to_thread(_bring_up, ctx, kubeconfig)
    yield
