"""In-memory fakes of the ports the K3sCluster services use (unit tests only)."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import re
import shlex
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fixtures.pki import Pki, k3s_yaml
from k3s_deploy import errors
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.ports.ssh import CommandResult, SshRunner, SshTarget
from k3s_deploy.ports.target import NodeMetadataPatch, Taint, TargetCluster, TargetNode, TargetPod
from k3s_deploy.services.k3scluster import install, node_config, nodemeta
from k3s_deploy.services.k3scluster.kubevip import MANIFEST_PATH as KUBE_VIP_MANIFEST

from . import fake_jobs
from .fake_jobs import FakeJob


class FakeObjects:
    def __init__(self) -> None:
        self.children: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_patches: list[dict[str, Any]] = []
        self.deleted_children: list[str] = []
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}

    async def list_children(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(c)
            for (ns, _), c in self.children.items()
            if ns == namespace and c["metadata"]["labels"].get("k3sdeploy.io/cluster") == cluster
        ]

    async def list_namespace_vms(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(c) for (ns, _), c in self.children.items() if ns == namespace]

    async def create_child(self, body: Mapping[str, Any]) -> dict[str, Any]:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self.children.setdefault(key, copy.deepcopy(dict(body)))
        return copy.deepcopy(self.children[key])

    async def patch_child_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
        self.children[(namespace, name)]["spec"].update(copy.deepcopy(dict(spec)))

    async def patch_child_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        self.children[(namespace, name)]["metadata"].setdefault("annotations", {}).update(annotations)

    async def delete_child(self, namespace: str, name: str) -> None:
        self.deleted_children.append(name)
        child = self.children.get((namespace, name))
        if child is not None:
            child["metadata"]["deletionTimestamp"] = "now"

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        secret = self.secrets.get((namespace, name))
        return dict(secret["data"]) if secret else None

    async def read_secret_labelled(
        self, namespace: str, name: str
    ) -> tuple[dict[str, bytes], dict[str, str]] | None:
        secret = self.secrets.get((namespace, name))
        return (dict(secret["data"]), dict(secret["labels"])) if secret else None

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        data = self.config_maps.get((namespace, name))
        return dict(data) if data is not None else None

    async def write_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        *,
        labels: Mapping[str, str],
        owner: Mapping[str, Any] | None,
        drop_others: bool = False,
    ) -> bool:
        current = self.secrets.get((namespace, name))
        new = dict(data)
        if current is not None:
            if any(current["labels"].get(k) != v for k, v in labels.items()):
                raise errors.InvalidSpec(f"Secret {name} is not ours", reason="SecretConflict")
            new = dict(data) if drop_others else {**current["data"], **data}  # a merge patch, as the API does
            if current["data"] == new:
                return False
            labels, owner = current["labels"], current["owner"]
        self.secrets[(namespace, name)] = {"data": new, "labels": dict(labels), "owner": owner}
        return True

    async def delete_managed_secret(self, namespace: str, name: str, *, labels: Mapping[str, str]) -> bool:
        current = self.secrets.get((namespace, name))
        if current is None or any(current["labels"].get(k) != v for k, v in labels.items()):
            return False
        del self.secrets[(namespace, name)]
        return True

    async def patch_cluster_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.status_patches.append(copy.deepcopy(dict(status)))

    # --- what the ProxmoxVM controller would do ---
    def boot_all(self, *, vmid_base: int = 100, addresses: Mapping[str, str] | None = None) -> None:
        for i, ((_, name), child) in enumerate(sorted(self.children.items())):
            ip_config = (child["spec"].get("cloudInit") or {}).get("ipConfig") or {}
            ip = (addresses or {}).get(name) or ip_config.get("address", f"10.9.0.{i + 10}/24").split("/")[0]
            child["status"] = {
                "vmid": child.get("status", {}).get("vmid") or vmid_base + i,
                "node": "pve1",
                "addresses": [ip],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": ""}],
            }


def key_line(label: str) -> str:
    """A well-formed ed25519 public key line made from ``label`` (same label, same key)."""
    blob = (
        struct.pack(">I", 11)
        + b"ssh-ed25519"
        + struct.pack(">I", 32)
        + hashlib.sha256(label.encode()).digest()
    )
    return f"ssh-ed25519 {base64.b64encode(blob).decode()}"


def fingerprint_of(label: str) -> str:
    """The SHA256 fingerprint of :func:`key_line` (what status and pins show for that host)."""
    blob = base64.b64decode(key_line(label).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


SERVER_TOKEN = "/var/lib/rancher/k3s/server/token"
AGENT_TOKEN = "/var/lib/rancher/k3s/server/agent-token"
FAKE_CA_HASH = "ab" * 32


@dataclass
class FakeHost:
    host_key: str  # a label: the host's key is key_line(host_key)
    authorized_key: str
    version: str | None = None
    kubeconfig: str | None = None
    scripts: list[str] = field(default_factory=list)
    reachable: bool = True
    fail_install: str | None = None
    half_install: bool = False
    agent_running: bool = True
    files: dict[str, str] = field(default_factory=dict)  # what K3s wrote (server/token, agent-token)
    join_token: str | None = None  # K3S_TOKEN of the last install
    uploads: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # remote path -> (content, mode)
    etcd: bool = False  # a server running embedded etcd (--cluster-init, joined, or converted)
    manifests: list[str] = field(default_factory=list)  # kube-vip placement scripts run here
    modes: dict[str, int] = field(default_factory=dict)  # mode of each file a script wrote
    restarts: list[str] = field(default_factory=list)  # units restarted by a settings rollout, in order
    jobs: dict[str, FakeJob] = field(default_factory=dict)  # detached guest jobs (fake_jobs.py)

    def apply_files(self, script: str) -> None:
        """What the settings part of a script leaves: the files (decoded) with their mode, the digest."""
        for b64, mode, path in _WRITE.findall(script):
            self.files[path] = base64.b64decode(b64).decode()
            self.modes[path] = int(mode, 8)
        for digest in _DIGEST_WRITE.findall(script):
            self.files[node_config.DIGEST_FILE] = digest + "\n"

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.host_key)

    def result(self, exit_status: int, stdout: str = "", stderr: str = "") -> CommandResult:
        return CommandResult(exit_status, stdout, stderr, self.fingerprint, key_line(self.host_key))


_WRITE = re.compile(
    r"printf '%s' '([A-Za-z0-9+/=]*)' \| base64 -d > \"\$t\"\nchmod (\d+) \"\$t\"; mv -f \"\$t\" (\S+)"
)
_DIGEST_WRITE = re.compile(r"printf '%s\\n' ([0-9a-f]{64}) > " + re.escape(node_config.DIGEST_FILE))


# What K3s writes on a server: real PEM, since the operator parses every certificate and key.
K3S_YAML = k3s_yaml(Pki.create())


def _joins_by_file(script: str) -> re.Match[str] | None:
    """A server's join URL from the join file the script writes (K3s reads it as --server)."""
    if " server " not in script.strip().splitlines()[-1]:
        return None
    for b64, _, path in _WRITE.findall(script):
        if path == node_config.JOIN_FILE:
            return re.search(r"server: https://([0-9.]+):6443", base64.b64decode(b64).decode())
    return None


class FakeSsh:
    """Hosts by address; honours host-key pinning and key auth like the asyncssh adapter."""

    def __init__(self) -> None:
        self.hosts: dict[str, FakeHost] = {}
        self.log: list[tuple[str, str]] = []  # (host, what)
        self.refused: list[str] = []  # hosts whose key did not match the pin (nothing ran there)
        self.install_seconds = 0.0  # > 0: installs take time, so concurrent ones overlap
        self.endpoint_code = "401"  # what curl on a server says spec.endpoint answered ("000": nothing)
        self.hold_jobs = False  # True: detached jobs keep running until it is cleared (fake_jobs.py)
        self.job_starts: list[tuple[str, str]] = []  # (host, job) of every detached job started

    def _check(self, target: SshTarget) -> FakeHost:
        host = self.hosts.get(target.host)
        if host is None or not host.reachable:
            raise errors.SshUnavailable(f"cannot reach {target.describe()}")
        pinned = target.pinned_host_key
        if pinned and pinned != host.fingerprint and not target.accept_changed_host_key:
            self.refused.append(target.host)
            raise errors.HostKeyMismatch(
                f"host key of {target.host} changed: pinned {target.pinned_host_key}, presented {host.fingerprint}"
            )
        if target.private_key != host.authorized_key:
            raise errors.SshAuthFailed(f"{target.describe()} refused the SSH key")
        return host

    async def run(
        self,
        target: SshTarget,
        command: str,
        *,
        input: str | None = None,
        sudo: bool | None = None,
        timeout_s: float = 60.0,
        check: bool = False,
    ) -> CommandResult:
        host = self._check(target)
        if command.startswith(fake_jobs.PREFIXES):
            return await fake_jobs.handle(self, target, host, command, input)
        settings = node_config.CONFIG_FILE in (input or "") or node_config.DIGEST_FILE in (input or "")
        if command == "sh -s" and input and settings and "INSTALL_K3S" not in input:
            host.apply_files(input)  # a settings rollout: files and a restart, or the digest after it
            host.restarts += re.findall(r"^systemctl restart (\S+)$", input, re.M)
            return host.result(0, "", "")
        if command == "sh -s" and input and KUBE_VIP_MANIFEST in input:
            self.log.append((target.host, "kube-vip"))
            host.manifests.append(input)
            return host.result(0)
        if command.startswith("curl "):
            self.log.append((target.host, "curl " + command.rsplit(" ", 1)[-1]))
            return host.result(0, self.endpoint_code)
        if command == "sh -s" and input and "systemctl restart k3s" in input:
            # the conversion: a config.yaml.d drop-in with cluster-init, then a restart (no install)
            self.log.append((target.host, "convert"))
            host.etcd = host.etcd or ("cluster-init: true" in input and host.kubeconfig is not None)
            return host.result(0, "", "")
        if command == "sh -s" and input:
            join = re.search(r"--server https://([0-9.]+):6443", input) or _joins_by_file(input)
            anchor = self.hosts.get(join.group(1)) if join else None
            if anchor is not None and not anchor.etcd:
                self.log.append((target.host, "install-refused"))
                return host.result(1, "", "failed to join cluster: the server does not run embedded etcd")
            host.apply_files(input)
            host.scripts.append(input)
            self.log.append((target.host, "install"))
            if self.install_seconds:
                await asyncio.sleep(self.install_seconds)
                self.log.append((target.host, "installed"))
            if host.fail_install:
                if host.half_install:  # the binary lands, the service does not start
                    host.version = "v1.31.4+k3s1"
                return host.result(1, "", host.fail_install)
            env = {k: shlex.split(v)[0] for k, v in re.findall(r"^export (\w+)=(.*)$", input, re.M)}
            host.version = env.get("INSTALL_K3S_VERSION", "v1.31.4+k3s1")
            host.join_token = env.get("K3S_TOKEN")
            if " server " in input.strip().splitlines()[-1]:
                host.kubeconfig = K3S_YAML
                host.etcd = host.etcd or "--cluster-init" in input or join is not None
                password = (host.join_token or "").rsplit(":", 1)[-1]
                host.files[SERVER_TOKEN] = f"K10{FAKE_CA_HASH}::server:{password}\n"
                agent = env.get("K3S_AGENT_TOKEN")
                host.files[AGENT_TOKEN] = (
                    f"K10{FAKE_CA_HASH}::node:{agent}\n" if agent else host.files[SERVER_TOKEN]
                )
            return host.result(0, "[INFO] done", "")
        self.log.append((target.host, "probe"))
        digest = host.files.get(node_config.DIGEST_FILE, "").strip()
        out = f"{install.CONFIG_DIGEST_MARKER} {digest}\n"
        out += "k3s-deploy:server-kubeconfig\n" if host.kubeconfig else ""
        out += "k3s-deploy:embedded-etcd\n" if host.etcd and host.version else ""
        placed = bool(host.manifests) and not host.manifests[-1].startswith("rm -f ")
        out += f"{install.KUBE_VIP_MARKER}\n" if placed else ""
        out += f"k3s version {host.version} (abcdef)\n" if host.version else ""
        return host.result(0, out, "")

    async def upload(
        self,
        target: SshTarget,
        local_path: Path,
        remote_path: str,
        *,
        mode: int = 0o644,
        sudo: bool | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        host = self._check(target)
        self.log.append((target.host, f"upload {remote_path}"))
        host.uploads[remote_path] = (await asyncio.to_thread(local_path.read_bytes), mode)

    async def fetch(
        self, target: SshTarget, path: str, *, sudo: bool | None = None, timeout_s: float = 30.0
    ) -> bytes:
        host = self._check(target)
        if path in host.files:
            return host.files[path].encode()
        if host.kubeconfig is None or not path.endswith("k3s.yaml"):
            raise errors.CommandFailed("no such file", exit_status=1)
        return host.kubeconfig.encode()

    async def host_key(self, target: SshTarget) -> str:
        return self._check(target).fingerprint

    def installs(self) -> list[str]:
        return [h for h, what in self.log if what == "install"]


class AnsweringSsh(FakeSsh):
    """FakeSsh where a test answers some commands itself: :meth:`answer` returns None for the rest."""

    def answer(self, target: SshTarget, command: str) -> CommandResult | None:
        return None

    async def run(
        self,
        target: SshTarget,
        command: str,
        *,
        input: str | None = None,
        sudo: bool | None = None,
        timeout_s: float = 60.0,
        check: bool = False,
    ) -> CommandResult:
        answered = self.answer(target, command)
        if answered is not None:
            self.log.append((target.host, command))
            return answered
        return await super().run(target, command, input=input, sudo=sudo, timeout_s=timeout_s, check=check)


class FakeTarget:
    """The workload cluster: every host with K3s installed is a Ready node named by --node-name,
    registered with the labels and taints of its install (arguments or its config.yaml.d file) (later changes: patches only)."""

    def __init__(self, ssh: FakeSsh) -> None:
        self.ssh = ssh
        self.not_ready: set[str] = set()
        self.kubeconfigs: list[str] = []
        # node -> (labels, annotations, taints, resourceVersion), from registration on
        self.meta: dict[str, tuple[dict[str, str], dict[str, str], list[Taint], int]] = {}
        self.patches: list[tuple[str, NodeMetadataPatch]] = []

    def _registered(
        self, name: str, script: str, files: Mapping[str, str]
    ) -> tuple[dict[str, str], dict[str, str], list[Taint], int]:
        if name not in self.meta:
            # from the installer's arguments, or (settings as files) the node's config.yaml.d file
            node = yaml.safe_load(files.get(node_config.NODE_FILE, "")) or {}
            found_labels = re.findall(r"--node-label (\S+)", script) + node.get("node-label+", [])
            labels = dict(kv.split("=", 1) for kv in found_labels)
            found_taints = re.findall(r"--node-taint (\S+)", script) + node.get("node-taint+", [])
            taints = [nodemeta.parse_taint(t) for t in found_taints]
            self.meta[name] = (labels, {}, taints, 1)
        return self.meta[name]

    async def patch_node_metadata(self, kubeconfig: str, node: str, patch: NodeMetadataPatch) -> bool:
        if node not in self.meta:
            return False
        labels, annotations, taints, version = self.meta[node]
        if patch.resource_version is not None and patch.resource_version != str(version):
            raise errors.KubeUnavailable("the cluster's API answered 409")
        for target, changes in ((labels, patch.labels), (annotations, patch.annotations)):
            for key, value in changes.items():
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        new_taints = list(patch.taints) if patch.taints is not None else taints
        self.meta[node] = (labels, annotations, new_taints, version + 1)
        self.patches.append((node, patch))
        return True

    async def nodes(self, kubeconfig: str) -> list[TargetNode]:
        self.kubeconfigs.append(kubeconfig)
        out = []
        for host in self.ssh.hosts.values():
            if not host.version or not host.scripts:
                continue
            name = re.search(r"--node-name (\S+)", host.scripts[-1])
            assert name
            labels, annotations, taints, version = self._registered(
                name.group(1), host.scripts[-1], host.files
            )
            out.append(
                TargetNode(
                    name.group(1),
                    name.group(1) not in self.not_ready,
                    host.version,
                    labels=dict(labels),
                    annotations=dict(annotations),
                    taints=tuple(taints),
                    resource_version=str(version),
                )
            )
        return out

    # day-2 writes: a cluster without workloads (the day-2 world records and plays them)
    async def set_unschedulable(self, kubeconfig: str, node: str, unschedulable: bool) -> bool:
        return any(n.name == node for n in await self.nodes(kubeconfig))

    async def pods_on(self, kubeconfig: str, node: str) -> list[TargetPod]:
        return []

    async def evict(self, kubeconfig: str, namespace: str, name: str) -> bool:
        return True

    async def delete_node(self, kubeconfig: str, node: str) -> bool:
        return any(n.name == node for n in await self.nodes(kubeconfig))


class FakeAgents:
    """The guest agents behind ``agent/file-read``: a host's SSH key files, by the VM's vmid."""

    def __init__(self, objects: FakeObjects, ssh: FakeSsh) -> None:
        self.objects = objects
        self.ssh = ssh
        self.reads: list[tuple[int, str]] = []
        self.denied = False

    async def read_guest_file(self, node: str, vmid: int, path: str, *, max_bytes: int) -> bytes:
        self.reads.append((vmid, path))
        if self.denied:
            raise errors.ProxmoxPermissionDenied(
                f"Permission check failed (/vms/{vmid}, VM.GuestAgent.FileRead|VM.GuestAgent.Unrestricted)"
            )
        for child in self.objects.children.values():
            st = child.get("status") or {}
            if st.get("vmid") != vmid:
                continue
            host = self.ssh.hosts.get((st.get("addresses") or [""])[0])
            if host is None or not host.agent_running:
                raise errors.GuestNotReady("QEMU guest agent is not running")
            if path.endswith("ssh_host_ed25519_key.pub"):
                return (key_line(host.host_key) + " root@guest\n").encode()
            raise errors.GuestFileUnreadable(
                f"Agent error: failed to open file '{path}' (mode: 'r'): No such file or directory"
            )
        raise errors.ProxmoxNotFound(
            f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
        )


PVE_SECRET = {
    "data": {"url": b"https://pve.example:8006", "tokenId": b"root@pam!op", "tokenSecret": b"s3cret"},
    "labels": {},
    "owner": None,
}


def stands_for_the_ports(
    objects: FakeObjects, ssh: FakeSsh, target: FakeTarget
) -> tuple[ClusterObjects, SshRunner, TargetCluster]:
    """Never called: mypy checks here that each fake satisfies the port it stands for."""
    return objects, ssh, target
