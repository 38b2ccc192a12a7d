"""The simulated cluster as plain Python objects: nodes, storages, VMs, tasks, users, tokens and ACLs.

Everything here is JSON-serialisable through ``dataclasses.asdict`` so the state file can rebuild it.
Wall-clock times (``time.time()``) are stored, so a restarted simulator keeps uptimes and task ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    name: str
    cpus: int = 8
    memory: int = 32 * 1024**3
    online: bool = True
    boot_time: float = 0.0


@dataclass
class Storage:
    id: str
    type: str = "lvmthin"
    shared: bool = False
    total: int = 500 * 1024**3
    nodes: list[str] | None = None  # None: every node
    content: str = "images,rootdir"

    def on(self, node: str) -> bool:
        return self.nodes is None or node in self.nodes


@dataclass
class VM:
    vmid: int
    node: str
    config: dict[str, str]
    pending: dict[str, str] = field(default_factory=dict)
    pending_delete: list[str] = field(default_factory=list)
    status: str = "stopped"  # running | stopped
    qmpstatus: str = "stopped"  # running | paused | stopped
    started_at: float | None = None
    created_at: float = 0.0
    status_changed_at: float = 0.0
    prev_status: str = "unknown"
    instance_id: str = ""
    booted: dict[str, str] | None = None  # cloud-init data the running guest booted with
    ci_drive: dict[str, str] | None = None  # cloud-init data on the drive (rebuilt at start / PUT)
    pid: int = 0
    # lab-only guest knobs set through the admin endpoint (e.g. impostorSshd: a man in the middle)
    lab: dict[str, Any] = field(default_factory=dict)

    @property
    def lock(self) -> str | None:
        return self.config.get("lock")

    @property
    def template(self) -> bool:
        return self.config.get("template") == "1"

    @property
    def name(self) -> str:
        return self.config.get("name", f"VM {self.vmid}")

    def digest(self) -> str:
        """SHA-1 over the config as PVE hashes its config file (current and pending sections)."""
        lines = [f"{k}: {v}" for k, v in sorted(self.config.items())]
        lines += ["[PENDING]"] + [f"{k}: {v}" for k, v in sorted(self.pending.items())]
        lines += [f"delete: {','.join(self.pending_delete)}"]
        return hashlib.sha1("\n".join(lines).encode(), usedforsecurity=False).hexdigest()


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str  # user@realm (owner of a token)
    tokenid: str | None
    end_at: float
    args: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class User:
    userid: str
    password: str = ""
    enable: bool = True


@dataclass
class Token:
    full_id: str  # user@realm!name
    secret: str
    privsep: bool = True

    @property
    def user(self) -> str:
        return self.full_id.split("!", 1)[0]


@dataclass
class Acl:
    path: str
    ugid: str  # user id or full token id
    roleid: str
    propagate: bool = True


@dataclass
class State:
    nodes: dict[str, Node] = field(default_factory=dict)
    storages: dict[str, Storage] = field(default_factory=dict)
    vms: dict[int, VM] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    acls: list[Acl] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)
    pools: dict[str, list[int]] = field(default_factory=dict)
    leases: dict[str, str] = field(default_factory=dict)  # MAC -> IPv4
    timing: dict[str, Any] = field(default_factory=dict)
    dhcp_range: str = "127.1.0.0/16"
    ticket_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    next_pid: int = 10000
    revision: int = 1

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["vms"] = {str(k): v for k, v in data["vms"].items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(
            nodes={k: Node(**v) for k, v in data["nodes"].items()},
            storages={k: Storage(**v) for k, v in data["storages"].items()},
            vms={int(k): VM(**v) for k, v in data["vms"].items()},
            tasks={k: Task(**v) for k, v in data["tasks"].items()},
            users={k: User(**v) for k, v in data["users"].items()},
            tokens={k: Token(**v) for k, v in data["tokens"].items()},
            acls=[Acl(**a) for a in data["acls"]],
            roles=data["roles"],
            pools={k: list(v) for k, v in data["pools"].items()},
            leases=data["leases"],
            timing=data["timing"],
            dhcp_range=data["dhcp_range"],
            ticket_secret=data["ticket_secret"],
            admin_token=data["admin_token"],
            next_pid=data["next_pid"],
            revision=data["revision"],
        )

    def vm_pool(self, vmid: int) -> str | None:
        return next((p for p, members in self.pools.items() if vmid in members), None)
