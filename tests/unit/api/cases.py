"""Invalid resources, each with the message a person should see.

Shared by the unit tests (the pydantic models refuse them) and the integration tests (the real
apiserver refuses them through the generated CRDs), so both layers are held to the same messages.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def load_samples() -> dict[str, list[dict[str, Any]]]:
    """Every sample file, by file name, as a list of documents."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
        for path in sorted(SAMPLES.glob("*.yaml"))
    }


def sample(name: str) -> dict[str, Any]:
    """The single document of one sample file (a fresh copy)."""
    (doc,) = load_samples()[name]
    return copy.deepcopy(doc)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Mutation setting ``spec.a.b`` (dotted, from the object root) to ``value``."""

    def apply(obj: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(obj: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            node = node[key]
        del node[leaf]

    return apply


def _all(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(obj: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(obj)

    return apply


@dataclass(frozen=True)
class Invalid:
    """A sample broken by ``mutate``; the apiserver's and the model's messages must contain the texts."""

    id: str
    base: str
    mutate: Callable[[dict[str, Any]], None]
    api_message: str
    model_message: str | None = None

    def build(self, name: str | None = None) -> dict[str, Any]:
        obj = sample(self.base)
        self.mutate(obj)
        if name:
            obj["metadata"]["name"] = name
        return obj

    @property
    def expected_model_message(self) -> str:
        return self.model_message if self.model_message is not None else self.api_message


def _pools(*pools: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Mutation adding agent pools cloned like the sample's servers."""

    def apply(obj: dict[str, Any]) -> None:
        template = copy.deepcopy(obj["spec"]["servers"]["template"])
        obj["spec"]["agentPools"] = [{"replicas": 1, "template": template, **p} for p in pools]

    return apply


VM = "proxmoxvm-clone.yaml"
ADOPT = "proxmoxvm-adopt-vmid.yaml"
CLUSTER = "k3scluster-single-server.yaml"
HA = "k3scluster-ha.yaml"
DISCOVERY = "k3scluster-discovery-tags.yaml"
AIRGAP = "k3scluster-airgap.yaml"
LOCATIONS = "k3scluster-discovery-locations.yaml"

INVALID: tuple[Invalid, ...] = (
    # --- wrong types, missing fields, bounds, enums --------------------------------------------------
    Invalid(
        "vm-cores-not-a-number",
        VM,
        _set("spec.resources.cores", "two"),
        'spec.resources.cores: Invalid value: "string": spec.resources.cores in body must be of type integer',
        "Input should be a valid integer",
    ),
    Invalid("vm-missing-source", VM, _drop("spec.source"), "spec.source: Required value", "Field required"),
    Invalid(
        "vm-missing-credentials",
        VM,
        _drop("spec.credentialsRef"),
        "spec.credentialsRef: Required value",
        "Field required",
    ),
    Invalid(
        "vm-zero-cores",
        VM,
        _set("spec.resources.cores", 0),
        "spec.resources.cores: Invalid value: 0: spec.resources.cores in body should be greater than or equal to 1",
        "greater than or equal to 1",
    ),
    Invalid(
        "vm-power-state-unknown",
        VM,
        _set("spec.powerState", "On"),
        'spec.powerState: Unsupported value: "On": supported values: "Running", "Stopped"',
        "Input should be 'Running' or 'Stopped'",
    ),
    Invalid(
        "vm-vmid-too-small",
        ADOPT,
        _set("spec.source.existing.vmid", 42),
        "spec.source.existing.vmid in body should be greater than or equal to 100",
        "greater than or equal to 100",
    ),
    # --- mutually exclusive / dependent fields (CEL) ----------------------------------------------------
    Invalid(
        "vm-clone-and-existing",
        VM,
        _set("spec.source.existing", {"vmid": 105}),
        "set exactly one of source.existing (adopt a VM) or source.clone (clone a template)",
    ),
    Invalid(
        "vm-existing-without-selector",
        ADOPT,
        _set("spec.source.existing", {}),
        "give at least one of vmid, name or tags to find the VM",
    ),
    Invalid(
        "vm-dhcp-and-address",
        VM,
        _set("spec.cloudInit.ipConfig.dhcp", True),
        "ipConfig needs exactly one of dhcp: true or a static address",
    ),
    Invalid(
        "vm-gateway-with-dhcp",
        VM,
        _set("spec.cloudInit.ipConfig", {"dhcp": True, "gateway": "192.168.10.1"}),
        "gateway goes with a static address",
    ),
    Invalid(
        "vm-vmid-when-adopting",
        ADOPT,
        _set("spec.vmid", 105),
        "spec.vmid is the id for a cloned VM; to adopt an existing VM by id use spec.source.existing.vmid",
    ),
    Invalid(
        "vm-node-and-allowed-nodes",
        VM,
        _set("spec.node", "pve1"),
        "set node (a fixed Proxmox node) or allowedNodes (the operator picks one), not both",
    ),
    Invalid(
        "vm-insecure-and-fingerprint",
        "proxmoxvm-adopt-tags.yaml",
        _set("spec.insecureSkipTLSVerify", True),
        "insecureSkipTLSVerify and fingerprint contradict each other",
    ),
    Invalid(
        "vm-storage-on-linked-clone",
        VM,
        _set("spec.source.clone.full", False),
        "storage applies to full clones only",
    ),
    # --- addresses -----------------------------------------------------------------------------------
    Invalid(
        "vm-bad-address",
        VM,
        _set("spec.cloudInit.ipConfig.address", "192.168.10.300/24"),
        'spec.cloudInit.ipConfig.address in body must be of type cidr: "192.168.10.300/24"',
        "'192.168.10.300/24' is not an IPv4 CIDR like 192.168.1.10/24",
    ),
    Invalid(
        "vm-address-without-prefix",
        VM,
        _set("spec.cloudInit.ipConfig.address", "192.168.10.21"),
        'spec.cloudInit.ipConfig.address in body must be of type cidr: "192.168.10.21"',
        "'192.168.10.21' is not an IPv4 CIDR",
    ),
    Invalid(
        "vm-bad-nameserver",
        VM,
        _set("spec.cloudInit.nameservers", ["dns.example"]),
        'spec.cloudInit.nameservers[0] in body must be of type ipv4: "dns.example"',
        "'dns.example' is not an IPv4 address",
    ),
    # --- strings with a shape ------------------------------------------------------------------------
    Invalid(
        "vm-bad-tag",
        VM,
        _set("spec.tags", ["Web Server"]),
        "'Web Server': is not a valid Proxmox tag: use lower-case letters, digits and _ - + .",
    ),
    Invalid(
        "vm-bad-ssh-key",
        VM,
        _set("spec.cloudInit.sshAuthorizedKeys", ["AAAAC3NzaC1lZDI1NTE5 admin@example"]),
        "is not an OpenSSH public key line",
    ),
    Invalid(
        "vm-bad-disk-key",
        VM,
        _set("spec.resources.disk", "hda"),
        "'hda': is not a Proxmox disk key; use scsiN, virtioN, sataN or ideN",
    ),
    # --- K3sCluster ----------------------------------------------------------------------------------
    Invalid(
        "cluster-version-and-channel",
        CLUSTER,
        _set("spec.k3s.version", "v1.31.4+k3s1"),
        "set exactly one of k3s.version (a pinned release such as v1.31.4+k3s1) or k3s.channel",
    ),
    Invalid(
        "cluster-neither-version-nor-channel",
        CLUSTER,
        _drop("spec.k3s.channel"),
        "set exactly one of k3s.version",
    ),
    Invalid(
        "cluster-bad-version",
        HA,
        _set("spec.k3s.version", "1.31.4"),
        "'1.31.4': is not a K3s release; use a tag from github.com/k3s-io/k3s/releases such as v1.31.4+k3s1",
    ),
    Invalid(
        "cluster-bad-channel",
        CLUSTER,
        _set("spec.k3s.channel", "Stable!"),
        "'Stable!': is not a K3s release channel",
    ),
    Invalid(
        "cluster-even-servers",
        HA,
        _set("spec.servers.replicas", 2),
        "servers.replicas must be odd (1, 3, 5, ...) so etcd keeps quorum",
    ),
    Invalid(
        "cluster-too-many-servers",
        HA,
        _set("spec.servers.replicas", 11),
        "spec.servers.replicas in body should be less than or equal to 9",
        "less than or equal to 9",
    ),
    Invalid(
        "cluster-servers-and-discovery",
        DISCOVERY,
        _set("spec.servers", sample(CLUSTER)["spec"]["servers"]),
        "set either spec.servers (and optionally spec.agents) to clone VMs, or spec.discovery",
    ),
    Invalid(
        "cluster-agents-with-discovery",
        DISCOVERY,
        _set("spec.agents", {"replicas": 1, "template": sample(CLUSTER)["spec"]["servers"]["template"]}),
        "spec.agents clones agents next to spec.servers; with discovery list agents under spec.discovery",
    ),
    Invalid(
        "cluster-discovery-tags-and-locations",
        DISCOVERY,
        _set("spec.discovery.locations", {"servers": ["pve1/201"]}),
        "discovery needs exactly one of tags (find VMs by Proxmox tags) or locations (node/vmid lists)",
    ),
    Invalid(
        "cluster-bad-location",
        LOCATIONS,
        _set("spec.discovery.locations.agents", ["pve1-202"]),
        "'pve1-202': is not a VM location; write <proxmox-node>/<vmid>, for example pve1/105",
    ),
    Invalid(
        "cluster-no-server-tags",
        DISCOVERY,
        _set("spec.discovery.tags.servers", []),
        "spec.discovery.tags.servers in body should have at least 1 items",
        "at least 1 item",
    ),
    Invalid(
        "cluster-pool-without-gateway",
        HA,
        _drop("spec.network.gateway"),
        "a static ipPool needs network.gateway",
    ),
    Invalid(
        "cluster-pool-cidr-and-range",
        HA,
        _set("spec.network.ipPool.start", "192.168.20.50"),
        "ipPool needs either cidr or a start/end range, not both",
    ),
    Invalid(
        "cluster-range-without-prefix",
        LOCATIONS,
        _drop("spec.network.ipPool.prefixLength"),
        "an address range needs start, end and prefixLength together",
    ),
    Invalid(
        "cluster-bad-pool-cidr",
        HA,
        _set("spec.network.ipPool.cidr", "192.168.20.0/33"),
        'spec.network.ipPool.cidr in body must be of type cidr: "192.168.20.0/33"',
        "is not an IPv4 CIDR",
    ),
    Invalid(
        "cluster-auto-upgrade-pinned",
        HA,
        _set("spec.k3s.autoUpgrade", True),
        "autoUpgrade follows a channel: set k3s.channel, or change k3s.version to upgrade",
    ),
    Invalid(
        "cluster-ssh-port-out-of-range",
        CLUSTER,
        _set("spec.ssh.port", 70000),
        "spec.ssh.port in body should be less than or equal to 65535",
        "less than or equal to 65535",
    ),
    Invalid(
        "cluster-unknown-host-key-policy",
        CLUSTER,
        _set("spec.ssh.hostKeyPolicy", "Insecure"),
        'spec.ssh.hostKeyPolicy: Unsupported value: "Insecure": supported values: "GuestAgent", '
        '"TrustOnFirstUse", "AcceptChanged"',
        "Input should be 'GuestAgent', 'TrustOnFirstUse' or 'AcceptChanged'",
    ),
    Invalid(
        "cluster-missing-ssh-key",
        CLUSTER,
        _drop("spec.ssh.privateKeySecretRef"),
        "spec.ssh.privateKeySecretRef: Required value",
        "Field required",
    ),
    Invalid(
        "cluster-install-script-not-http",
        CLUSTER,
        _set("spec.k3s.installSource", {"script": {"url": "ftp://mirror/install.sh"}}),
        "'ftp://mirror/install.sh': is not an http(s) URL",
    ),
    Invalid(
        "cluster-bad-known-host-fingerprint",
        CLUSTER,
        _set("spec.ssh.knownHosts", {"10.0.0.5": "MD5:aa:bb"}),
        "is not an OpenSSH SHA256 fingerprint",
    ),
    # --- downloads by the operator are fenced (docs/security.md) -------------------------------------
    Invalid(
        "cluster-operator-download-without-checksum",
        AIRGAP,
        _drop("spec.k3s.installSource.airGap.binarySHA256"),
        "fetchFrom: Operator needs installerSHA256, binarySHA256",
    ),
    Invalid(
        "cluster-operator-download-images-without-checksum",
        AIRGAP,
        _drop("spec.k3s.installSource.airGap.imagesSHA256"),
        "with imagesURL, imagesSHA256",
    ),
    Invalid(
        "cluster-operator-download-over-http",
        AIRGAP,
        _set("spec.k3s.installSource.airGap.binaryURL", "http://mirror.example.internal/k3s"),
        "fetchFrom: Operator downloads only over https",
    ),
    Invalid(
        "cluster-operator-download-bad-checksum",
        AIRGAP,
        _set("spec.k3s.installSource.airGap.installerSHA256", "sha256:abc"),
        "is not a SHA-256 checksum",
    ),
    # --- agent pools, node labels and taints -------------------------------------------------------
    Invalid(
        "cluster-duplicate-pool-names",
        HA,
        _pools({"name": "gpu"}, {"name": "gpu"}),
        "spec.agentPools[].name must be unique",
    ),
    Invalid(
        "cluster-pool-named-like-a-role",
        HA,
        _pools({"name": "agent"}),
        "must not be server or agent",
    ),
    Invalid(
        "cluster-pool-name-not-a-dns-label",
        HA,
        _pools({"name": "GPU_pool"}),
        "must be a DNS label",
    ),
    Invalid(
        "cluster-bad-taint-effect",
        HA,
        _pools({"name": "gpu", "nodeTaints": ["dedicated=gpu:Never"]}),
        "is not a taint: key=value:Effect",
    ),
    Invalid(
        "cluster-bad-node-label",
        HA,
        _set("spec.servers.nodeLabels", {"not a key": "x"}),
        "nodeLabels must be Kubernetes labels",
    ),
    Invalid(
        "cluster-snapshot-cron-four-fields",
        HA,
        _set("spec.etcdSnapshots", {"scheduleCron": "0 3 * *"}),
        "is not a cron schedule; write five fields",
        "is not a cron schedule; write five fields",
    ),
    Invalid(
        "cluster-snapshot-s3-endpoint-url",
        HA,
        _set(
            "spec.etcdSnapshots",
            {
                "s3": {
                    "endpoint": "https://s3.example",
                    "bucket": "b1b",
                    "credentialsSecretRef": {"name": "s3"},
                }
            },
        ),
        "is not an S3 endpoint; write host or host:port",
        "is not an S3 endpoint; write host or host:port",
    ),
)


@dataclass(frozen=True)
class Valid:
    """A sample changed by ``mutate`` into another valid variant: both layers must accept it."""

    id: str
    base: str
    mutate: Callable[[dict[str, Any]], None]

    def build(self) -> dict[str, Any]:
        obj = sample(self.base)
        self.mutate(obj)
        return obj


# Edges the rules must not refuse (a rule that is too strict is as wrong as one that is too loose).
VALID: tuple[Valid, ...] = (
    Valid("vm-dhcp-only", VM, _set("spec.cloudInit.ipConfig", {"dhcp": True})),
    Valid(
        "vm-linked-clone", VM, _all(_set("spec.source.clone.full", False), _drop("spec.source.clone.storage"))
    ),
    Valid(
        "vm-fixed-node",
        VM,
        _all(_drop("spec.allowedNodes"), _set("spec.node", "pve2"), _set("spec.vmid", 150)),
    ),
    Valid("vm-insecure-tls", ADOPT, _set("spec.insecureSkipTLSVerify", True)),
    Valid("vm-existing-name-and-tags", ADOPT, _set("spec.source.existing", {"name": "db-1", "tags": ["db"]})),
    Valid("vm-explicit-delete-of-adopted", ADOPT, _set("spec.deletionPolicy", "Delete")),
    Valid("cluster-five-servers", HA, _set("spec.servers.replicas", 5)),
    Valid(
        "cluster-agent-pools-with-labels-and-taints",
        HA,
        _all(
            _pools(
                {
                    "name": "gpu",
                    "nodeLabels": {"example.com/gpu": "a100"},
                    "nodeTaints": ["gpu=yes:NoSchedule"],
                },
                {"name": "edge", "replicas": 0},
            ),
            _set("spec.servers.nodeTaints", ["node-role.kubernetes.io/control-plane:NoSchedule"]),
        ),
    ),
    Valid("cluster-no-agents", HA, _drop("spec.agents")),
    Valid("cluster-rc-version", HA, _set("spec.k3s.version", "v1.32.0-rc1+k3s2")),
    Valid("cluster-minor-channel", CLUSTER, _set("spec.k3s.channel", "v1.31")),
    Valid("cluster-server-tags-only", DISCOVERY, _drop("spec.discovery.tags.agents")),
    Valid("cluster-dhcp-with-filter", HA, _set("spec.network", {"addressCIDR": "192.168.20.0/24"})),
    Valid("cluster-accept-changed-host-keys", CLUSTER, _set("spec.ssh.hostKeyPolicy", "AcceptChanged")),
    Valid(
        "cluster-stopped-and-paused", HA, _all(_set("spec.powerState", "Stopped"), _set("spec.paused", True))
    ),
    Valid(
        "cluster-etcd-snapshots-s3-and-restore",
        HA,
        _set(
            "spec.etcdSnapshots",
            {
                "scheduleCron": "@every 6h",
                "retention": 10,
                "s3": {
                    "endpoint": "minio.lan:9000",
                    "bucket": "k3s-snaps",
                    "credentialsSecretRef": {"name": "s3"},
                },
                "restore": {"name": "before-x-srv-1-1735689600", "requestId": "2025-01-31.1"},
            },
        ),
    ),
    Valid(
        "cluster-script-mirror",
        CLUSTER,
        _set("spec.k3s.installSource", {"script": {"url": "http://10.0.0.2/k3s.sh"}}),
    ),
    Valid(
        "cluster-node-downloads-need-no-checksum",
        AIRGAP,
        _set(
            "spec.k3s.installSource.airGap",
            {
                "installerURL": "http://10.0.0.2/install.sh",
                "binaryURL": "http://10.0.0.2/k3s",
                "fetchFrom": "Node",
            },
        ),
    ),
)
