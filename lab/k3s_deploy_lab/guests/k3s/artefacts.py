"""What a K3s install leaves on a guest, written straight into the guest's root directory.

The files a real ``get.k3s.io`` install creates (``k3s`` binary, symlinks, killall and uninstall scripts,
systemd unit and env file) and the Node that K3s's kubelet would register for the flags given.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from k3s_deploy_lab.guests.k3s import scripts
from k3s_deploy_lab.guests.k3s.cluster import LabCluster
from k3s_deploy_lab.guests.k3s.flags import InstallRequest
from k3s_deploy_lab.guests.k3s.nodes import NodeRecord
from k3s_deploy_lab.guests.k3s.proxy import API_PORT
from k3s_deploy_lab.guests.sandbox import GuestRoot
from k3s_deploy_lab.guests.sshd import RunningGuest

BIN = "/usr/local/bin"
# What a real install leaves (and the uninstall scripts remove).
SERVER_FILES = (
    "/etc/rancher/k3s",
    "/var/lib/rancher/k3s",
    "/etc/rancher/node",
    "/var/lib/kubelet",
    "/run/k3s",
    f"{BIN}/k3s",
    f"{BIN}/kubectl",
    f"{BIN}/crictl",
    f"{BIN}/ctr",
    f"{BIN}/k3s-killall.sh",
    f"{BIN}/k3s-uninstall.sh",
    f"{BIN}/k3s-agent-uninstall.sh",
    "/etc/systemd/system/k3s.service",
    "/etc/systemd/system/k3s.service.env",
    "/etc/systemd/system/k3s-agent.service",
    "/etc/systemd/system/k3s-agent.service.env",
)


def remove_artefacts(root: GuestRoot) -> None:
    """What ``k3s-uninstall.sh`` removes."""
    for path in SERVER_FILES:
        target = root.path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def write_artefacts(
    guest: RunningGuest, req: InstallRequest, service: str, lab_url: str, out: list[str]
) -> None:
    """Write what the real installer leaves (binary, links, scripts, unit files); log lines to ``out``."""
    root = guest.root
    server_url = f"https://{guest.spec.addresses[0]}:{API_PORT}" if req.command == "server" else ""
    write_file(root, f"{BIN}/k3s", scripts.k3s_bin(req.version, server_url, lab_url), 0o755)
    out.append(f"[INFO]  Installing k3s to {BIN}/k3s")
    for link in ("kubectl", "crictl", "ctr"):
        target = root.path(f"{BIN}/{link}")
        if not target.exists() and not target.is_symlink():
            target.symlink_to("k3s")
            out.append(f"[INFO]  Creating {BIN}/{link} symlink to k3s")
    write_file(root, f"{BIN}/k3s-killall.sh", scripts.killall_sh(lab_url), 0o755)
    out.append(f"[INFO]  Creating killall script {BIN}/k3s-killall.sh")
    uninstall = "k3s-uninstall.sh" if req.command == "server" else "k3s-agent-uninstall.sh"
    write_file(root, f"{BIN}/{uninstall}", scripts.uninstall_sh(lab_url), 0o755)
    out.append(f"[INFO]  Creating uninstall script {BIN}/{uninstall}")
    env_lines = "".join(f"{k}='{v}'\n" for k, v in sorted(req.env.items()) if k.startswith("K3S_"))
    write_file(root, f"/etc/systemd/system/{service}.service.env", env_lines, 0o600)
    out.append(f"[INFO]  env: Creating environment file /etc/systemd/system/{service}.service.env")
    exec_line = " ".join([f"{BIN}/k3s", *req.redacted_args()])
    unit = (
        f"[Unit]\nDescription=Lightweight Kubernetes\nDocumentation=https://k3s.io\n\n[Service]\n"
        f"Type={'notify' if req.command == 'server' else 'exec'}\n"
        f"EnvironmentFile=-/etc/systemd/system/{service}.service.env\nExecStart={exec_line}\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    write_file(root, f"/etc/systemd/system/{service}.service", unit, 0o644)
    out.append(f"[INFO]  systemd: Creating service file /etc/systemd/system/{service}.service")


def node_record(guest: RunningGuest, req: InstallRequest, cluster: LabCluster) -> NodeRecord:
    """The Node a kubelet with these flags would register: name, role labels, taints, annotations."""
    spec = guest.spec
    name = (req.first("node-name") or spec.hostname).lower()
    node_ip = (req.many("node-ip") or [spec.addresses[0]])[0].split(",")[0]
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/instance-type": "k3s",
    }
    etcd = req.command == "server" and cluster.etcd
    if req.command == "server":
        labels["node-role.kubernetes.io/control-plane"] = "true"
        labels["node-role.kubernetes.io/master"] = "true"
        if etcd:
            labels["node-role.kubernetes.io/etcd"] = "true"
    for item in req.many("node-label"):
        key, _, value = item.partition("=")
        labels[key.strip()] = value.strip()
    taints = []
    for item in req.many("node-taint"):
        kv, _, effect = item.rpartition(":")
        key, _, value = kv.partition("=")
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        taints.append(taint)
    annotations = {
        "k3s.io/hostname": spec.hostname,
        "k3s.io/internal-ip": node_ip,
        "k3s.io/node-args": json.dumps(req.redacted_args()),
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    return NodeRecord(
        name=name,
        role=req.command,
        ip=spec.addresses[0],
        internal_ip=node_ip,
        version=req.version,
        instance_id=spec.instance_id,
        etcd=etcd,
        labels=labels,
        taints=taints,
        annotations=annotations,
        running=True,
    )


def write_file(root: GuestRoot, path: str, text: str, mode: int) -> None:
    target = root.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".lab-tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(target)


def log_file(root: GuestRoot, service: str) -> Path:
    path = root.path(f"/var/log/{service}.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def config_texts(root: GuestRoot) -> list[str]:
    base = root.path("/etc/rancher/k3s/config.yaml")
    texts = [base.read_text()] if base.is_file() else []
    drop_in = root.path("/etc/rancher/k3s/config.yaml.d")
    if drop_in.is_dir():
        texts += [p.read_text() for p in sorted(drop_in.glob("*.yaml"))]
    return texts


def read_token_file(root: GuestRoot, path: str | None) -> str | None:
    if not path:
        return None
    target = root.path(path) if path.startswith("/") else None
    if target is None or not target.is_file():
        raise FileNotFoundError(f"Error: open {path}: no such file or directory")
    return target.read_text().strip()
