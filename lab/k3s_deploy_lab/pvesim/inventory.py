"""Build the initial :class:`State` from an inventory YAML file (format in docs/pvesim.md).

Secrets (passwords, token secrets) may be left out of the file: they are generated here and kept in
the state file, so a checked-in inventory never holds one.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from k3s_deploy_lab.pvesim.model import VM, Acl, Node, State, Storage, Token, User
from k3s_deploy_lab.pvesim.vmconfig import NET_RE, ensure_mac, new_smbios_uuid, normalize_tags

SAMPLE = Path(__file__).with_name("sample-inventory.yaml")

DEFAULT_TIMING: dict[str, Any] = {
    "scale": 1.0,
    # seconds per task type before scaling (PVE-like orders of magnitude)
    "tasks": {
        "qmclone": 20.0, "qmstart": 3.0, "qmstop": 2.0, "qmshutdown": 8.0, "qmreboot": 10.0,
        "qmreset": 1.0, "qmpause": 0.5, "qmresume": 0.5, "qmconfig": 0.3, "resize": 2.0,
        "qmdestroy": 4.0, "qmtemplate": 5.0,
    },
    "bootDelay": 25.0,  # until the guest agent answers after a start
    "authFailureDelay": 3.0,  # PVE answers a failed login after ~3 s
    "agentTimeout": 3.0,  # "QEMU guest agent is not running" comes after this
    "resourcesStatusLag": 10.0,  # /cluster/resources status lags this much behind a power change
    "shutdownTimeout": 60.0,  # default shutdown timeout when a guest ignores ACPI
}  # fmt: skip

BUILTIN_ROLES: dict[str, list[str]] = {
    "NoAccess": [],
    "PVEAuditor": ["Datastore.Audit", "Pool.Audit", "Sys.Audit", "VM.Audit", "VM.GuestAgent.Audit", "SDN.Audit"],
    "PVEVMUser": ["VM.Audit", "VM.Backup", "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console",
                  "VM.PowerMgmt", "VM.GuestAgent.Audit", "Pool.Audit"],
    "PVEVMAdmin": ["VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU",
                   "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory",
                   "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.Migrate", "VM.PowerMgmt",
                   "VM.Snapshot", "VM.Snapshot.Rollback", "VM.GuestAgent.Audit", "VM.GuestAgent.FileRead",
                   "VM.GuestAgent.FileWrite", "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.Unrestricted",
                   "Pool.Audit", "SDN.Use"],
    "PVEDatastoreUser": ["Datastore.AllocateSpace", "Datastore.Audit"],
    "PVEDatastoreAdmin": ["Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate",
                          "Datastore.Audit"],
    "PVEPoolUser": ["Pool.Audit"],
    "PVESDNUser": ["SDN.Audit", "SDN.Use"],
}  # fmt: skip


def merged_timing(given: dict[str, Any] | None) -> dict[str, Any]:
    out = {**DEFAULT_TIMING, "tasks": dict(DEFAULT_TIMING["tasks"])}
    for key, value in (given or {}).items():
        if key == "tasks":
            out["tasks"].update({k: float(v) for k, v in value.items()})
        else:
            out[key] = float(value)
    return out


def normalize_config(config: dict[str, Any]) -> dict[str, str]:
    """Inventory config values as PVE stores them: strings, tags normalised, NICs with MACs."""
    out: dict[str, str] = {}
    for key, value in config.items():
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        if key == "tags":
            text = normalize_tags(text)
        elif NET_RE.match(key):
            text = ensure_mac(text)
        out[key] = text
    out.setdefault("smbios1", new_smbios_uuid())
    out.setdefault("vmgenid", str(uuid.uuid4()))
    return out


def load_inventory(path: Path) -> State:
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    now = time.time()
    state = State(timing=merged_timing(data.get("timing")))
    state.dhcp_range = str(data.get("dhcp", {}).get("range", state.dhcp_range))
    for n in data.get("nodes", []):
        state.nodes[n["name"]] = Node(
            name=n["name"], cpus=int(n.get("cpus", 8)), memory=int(float(n.get("memoryGiB", 32)) * 1024**3),
            online=bool(n.get("online", True)), boot_time=now - float(n.get("uptime", 86400)),
        )  # fmt: skip
    for s in data.get("storages", []):
        state.storages[s["id"]] = Storage(
            id=s["id"], type=s.get("type", "lvmthin"), shared=bool(s.get("shared", False)),
            total=int(float(s.get("sizeGiB", 500)) * 1024**3), nodes=s.get("nodes"),
            content=s.get("content", "images,rootdir"),
        )  # fmt: skip
    state.roles = {**BUILTIN_ROLES, **{k: list(v) for k, v in data.get("roles", {}).items()}}
    for u in data.get("users", []):
        state.users[u["userid"]] = User(u["userid"], str(u.get("password") or secrets.token_urlsafe(18)))
    for t in data.get("tokens", []):
        state.tokens[t["id"]] = Token(
            t["id"], str(t.get("secret") or uuid.uuid4()), bool(t.get("privsep", True))
        )
    for a in data.get("acls", []):
        state.acls.append(Acl(a["path"], a["ugid"], a["role"], bool(a.get("propagate", True))))
    state.pools = {name: [] for name in data.get("pools", [])}
    for v in data.get("vms", []):
        vm = VM(vmid=int(v["vmid"]), node=v["node"], config=normalize_config(v.get("config", {})),
                created_at=now - 3600, status_changed_at=now - 3600, instance_id=str(uuid.uuid4()))  # fmt: skip
        if v.get("pool"):
            state.pools.setdefault(v["pool"], []).append(vm.vmid)
        state.vms[vm.vmid] = vm
        if v.get("status") == "running":
            vm.status = vm.qmpstatus = vm.prev_status = "running"
            vm.started_at = now - 600
    return state
