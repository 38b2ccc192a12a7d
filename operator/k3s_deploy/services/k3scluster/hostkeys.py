"""SSH host keys learned out of band, and pinned in a Secret the operator owns.

Trust in a node's SSH server never comes from the SSH connection itself unless the user asks for
it: before the first connection to a VM, its host public key is read through the QEMU guest agent
over the verified Proxmox API (ed25519, then ecdsa, then rsa), and only that key is accepted (the
SSH client offers only its algorithm, so the server has to present exactly that key). Pins live in
the Secret ``<cluster>-host-keys``, one entry ``<node>.<vmid>`` per machine holding the OpenSSH
public key line; they are read back on every pass, so losing status never resets trust, and a VM
re-created under a new vmid is read through the agent again. ``spec.ssh.knownHosts`` still wins.
With ``hostKeyPolicy: TrustOnFirstUse`` or ``AcceptChanged`` the first key presented is pinned
instead, and the cluster carries the condition ``HostKeyTrustedOnFirstUse`` while that policy holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from k3s_deploy import errors
from k3s_deploy.api.k3scluster import SshSettings
from k3s_deploy.api.k3scluster_status import ClusterNode
from k3s_deploy.ports.children import ClusterObjects
from k3s_deploy.ports.proxmox import ProxmoxClient
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.k3scluster.secrets import managed_labels
from k3s_deploy.services.k3scluster.topology import ClusterRef

TOFU_CONDITION = "HostKeyTrustedOnFirstUse"
# Where sshd keeps its public keys, in the order tried (the first that reads is the one pinned).
KEY_FILES = (
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_rsa_key.pub",
)
# How qemu-ga says a file is not there (guest-file-open's error, passed on by Proxmox).
NO_SUCH_FILE = "No such file or directory"
# A public key line is well under 1 KiB (RSA 4096: ~750 bytes); anything longer is not one.
MAX_KEY_FILE = 16 * 1024
_MAX_BLOB = 2048
# Host key algorithms a client offers for each key type.
ALGORITHMS: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
Source = Literal["KnownHosts", "Secret", "GuestAgent", "Status"]
T = TypeVar("T")


def secret_name(cluster: str) -> str:
    return f"{cluster}-host-keys"


def entry(name: str, vmid: int | None) -> str:
    return f"{name}.{vmid}"


@dataclass(frozen=True)
class HostKey:
    """An SSH public key, checked to be well formed (it comes from a guest: hostile input)."""

    key_type: str
    blob: bytes

    @property
    def line(self) -> str:
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_public_key(raw: bytes | str) -> HostKey:
    """The key of an OpenSSH public key line (``type base64 [comment]``); ValueError if it is not one."""
    text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueError("not a single public key line")
    parts = lines[0].split()
    if len(parts) < 2 or parts[0] not in ALGORITHMS:
        raise ValueError("not an SSH public key of a known type")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the key is not base64") from exc
    if not 8 < len(blob) <= _MAX_BLOB:
        raise ValueError("the key has an impossible length")
    (size,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + size].decode("ascii", errors="replace") != parts[0]:
        raise ValueError("the key's type does not match its data")
    return HostKey(parts[0], blob)


@dataclass(frozen=True)
class Pin:
    """What a node must present: a fingerprint, the algorithms that make the server show that key."""

    fingerprint: str
    algorithms: tuple[str, ...] = ()
    source: Source = "Secret"


@dataclass
class HostKeys:
    """One pass's pins: loaded once from the Secret, learned through the agent, saved when changed."""

    objects: ClusterObjects
    ref: ClusterRef
    ssh: SshSettings
    agent: Callable[[], Awaitable[ProxmoxClient]] | None = None
    stored: dict[str, str] = field(default_factory=dict)  # Secret entry -> public key line
    pins: dict[str, Pin] = field(default_factory=dict)  # node name -> pin for this pass
    _changed: bool = False

    @property
    def trust_on_first_use(self) -> bool:
        return self.ssh.host_key_policy in ("TrustOnFirstUse", "AcceptChanged")

    async def load(self) -> None:
        data = await self.objects.read_secret(self.ref.namespace, secret_name(self.ref.name)) or {}
        self.stored = {k: v.decode(errors="replace") for k, v in data.items()}

    def pin(self, name: str, ip: str, vmid: int | None, recorded: ClusterNode | None) -> Pin | None:
        """The pin for a node without asking the guest: spec, Secret, or a fingerprint status kept
        from before pins had a Secret (same vmid only)."""
        given = self.ssh.known_hosts.get(ip) or self.ssh.known_hosts.get(name)
        if given:
            return Pin(given, source="KnownHosts")
        if name in self.pins:
            return self.pins[name]
        line = self.stored.get(entry(name, vmid))
        if line:
            try:
                key = parse_public_key(line)
            except ValueError:
                pass  # a damaged entry is learned again below, as if it were missing
            else:
                return Pin(key.fingerprint, ALGORITHMS[key.key_type], "Secret")
        legacy = recorded.host_key_fingerprint if recorded is not None else None
        if legacy and recorded is not None and recorded.vmid in (None, vmid):
            return Pin(legacy, source="Status")
        return None

    async def prepare(
        self, name: str, ip: str, vmid: int | None, pve_node: str | None, recorded: ClusterNode | None
    ) -> Pin | None:
        """The pin to connect with; for a node never pinned, read its key through the guest agent
        (unless the policy trusts the first key presented: then None)."""
        found = self.pin(name, ip, vmid, recorded)
        if found is not None or self.trust_on_first_use:
            return found
        key = await self._read_through_agent(name, vmid, pve_node)
        pin = Pin(key.fingerprint, ALGORITHMS[key.key_type], "GuestAgent")
        self.pins[name] = pin
        return pin

    async def _read_through_agent(self, name: str, vmid: int | None, pve_node: str | None) -> HostKey:
        if self.agent is None or vmid is None or not pve_node:
            raise errors.HostKeyUnavailable(
                f"node {name}: its VM is not known to Proxmox yet, so its SSH host key cannot be read"
            )
        client = await self.agent()
        problems: list[str] = []
        for path in KEY_FILES:
            try:
                raw = await client.read_guest_file(pve_node, vmid, path, max_bytes=MAX_KEY_FILE)
                return parse_public_key(raw)
            except errors.GuestFileUnreadable as exc:
                problems.append(exc.message)
            except (ValueError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: {exc}")
            except errors.ProxmoxPermissionDenied as exc:
                raise errors.ProxmoxPermissionDenied(
                    f"node {name}: {exc.message}. Reading the VM's SSH host key through the guest agent "
                    "needs VM.GuestAgent.FileRead (or VM.GuestAgent.Unrestricted) on PVE 9, VM.Monitor "
                    "on PVE 8; or set spec.ssh.hostKeyPolicy: TrustOnFirstUse"
                ) from exc
        missing = bool(problems) and all(NO_SUCH_FILE in p for p in problems)
        raise (errors.HostKeyNotGenerated if missing else errors.HostKeyUnavailable)(
            f"node {name}: cannot read an SSH host key of VM {vmid} through the QEMU guest agent "
            f"({problems[-1] if problems else 'no answer'}). Install and enable qemu-guest-agent in "
            "the template (and agent: 1 in the VM's options), make sure sshd has generated its host "
            "keys, or set spec.ssh.hostKeyPolicy: TrustOnFirstUse (or spec.ssh.knownHosts)"
        )

    def confirm(self, name: str, vmid: int | None, pin: Pin | None, presented: str) -> str | None:
        """Record the key (public key line) a node presented on a verified connection; returns how
        it was trusted (``None`` when the pin was already stored as it is)."""
        try:
            key = parse_public_key(presented)
        except ValueError:
            return None
        stored = self.stored.get(entry(name, vmid))
        if stored == key.line:
            return None
        self.stored[entry(name, vmid)] = key.line
        self.pins[name] = Pin(key.fingerprint, ALGORITHMS[key.key_type], "Secret")
        self._changed = True
        if pin is None:
            return "FirstUse"
        if pin.fingerprint != key.fingerprint:
            return "Changed"
        return pin.source

    def forget_others(self, current: Mapping[str, int | None], keep: Collection[str] = ()) -> None:
        """Drop the pins of machines that are no longer members: a member removed (or moved to a new
        VM) leaves a stale entry, and a later VM given the same name and vmid would then be refused
        as HostKeyChanged. Nothing is dropped while a member's vmid is unknown, and names in ``keep``
        (members still leaving) stay. A dropped pin is learned again through the guest agent."""
        if not current or any(vmid is None for vmid in current.values()):
            return
        wanted = {entry(name, vmid) for name, vmid in current.items()}
        for key in list(self.stored):
            name = key.rsplit(".", 1)[0]
            if key not in wanted and name not in keep:
                del self.stored[key]
                self._changed = True

    async def save(self) -> None:
        if not self._changed:
            return
        await self.objects.write_secret(
            self.ref.namespace,
            secret_name(self.ref.name),
            {k: v.encode() for k, v in sorted(self.stored.items())},
            labels=managed_labels(self.ref.name),
            owner=self.ref.owner_reference(),
            drop_others=True,  # the pins of machines that are gone go with them
        )
        self._changed = False


async def first_contact(call: Coroutine[Any, Any, T], name: str, pin: Pin | None) -> T:
    """Run the first call to a node; a key that differs from the one its guest agent reported is
    not a "changed" key but something else answering at the VM's address, and says so."""
    try:
        return await call
    except errors.HostKeyMismatch as exc:
        if pin is None or pin.source != "GuestAgent":
            raise
        raise errors.HostKeyMismatch(
            f"node {name}: the SSH server at its address did not present the host key read from the VM "
            f"through the Proxmox guest agent ({pin.fingerprint}); nothing was run there. Something "
            "else answers at the VM's address (a man in the middle?), or its sshd serves other keys "
            f"than /etc/ssh holds. ({exc.message})",
            reason="HostKeyMismatch",
        ) from exc


def report(
    event: Callable[[Literal["Normal", "Warning"], str, str], None],
    name: str,
    how: str | None,
    pin: Pin | None,
    presented: str,
) -> None:
    """The Event for how a node's key came to be trusted (nothing when it was already pinned)."""
    if how == "Changed":
        event(
            "Warning",
            "HostKeyChanged",
            f"node {name}: host key changed from {pin.fingerprint if pin else None} to {presented}; "
            "accepted because spec.ssh.hostKeyPolicy is AcceptChanged",
        )
    elif how == "FirstUse":
        event(
            "Warning",
            TOFU_CONDITION,
            f"node {name}: pinned SSH host key {presented} as first presented, without checking it "
            "(spec.ssh.hostKeyPolicy allows trust on first use)",
        )
    elif how is not None:
        via = {"GuestAgent": "read through the Proxmox guest agent"}.get(how, f"from {how}")
        event("Normal", "HostKeyPinned", f"node {name}: pinned SSH host key {presented} ({via})")


def tofu_condition(conditions: Conditions, keys: HostKeys) -> None:
    """``HostKeyTrustedOnFirstUse`` is True exactly while the policy trusts first keys (a warning,
    outside Ready/Reconciling/Stalled)."""
    if not keys.trust_on_first_use:
        conditions.remove(TOFU_CONDITION)
        return
    conditions.set(
        TOFU_CONDITION,
        True,
        keys.ssh.host_key_policy,
        f"spec.ssh.hostKeyPolicy is {keys.ssh.host_key_policy}: a node's first SSH host key is "
        "trusted as presented, not checked against the key read through the Proxmox guest agent. "
        "Use GuestAgent (the default) to close this gap",
    )
