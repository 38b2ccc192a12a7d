"""The set of lab guests, kept in step with what the Proxmox simulator says runs.

The simulator is the source of truth (its admin ``/guests`` list). For every VM that runs and whose
guest agent answers, the fleet makes sure an SSH server answers at each of its loopback addresses;
when the VM stops or disappears it powers the guest off. A guest's disk (its root directory) and host
key live as long as the VM instance (``instanceId``): kept across restarts, dropped on re-creation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from k3s_deploy_lab.guests.sandbox import GuestRoot
from k3s_deploy_lab.guests.sshd import GuestSpec, HostKeyStore, RunningGuest, install_host_keys

PowerHook = Callable[[GuestSpec, GuestRoot, bool], Awaitable[None]]


def _loopback(addresses: list[Any]) -> tuple[str, ...]:
    out = []
    for addr in addresses:
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(str(addr).split("/")[0])
            if ip.version == 4 and ip.is_loopback:  # never bind anything outside 127.0.0.0/8
                out.append(str(ip))
    return tuple(out)


def parse_guest(item: dict[str, Any]) -> GuestSpec:
    keys = item.get("sshkeys") or []
    if isinstance(keys, str):
        keys = keys.splitlines()
    return GuestSpec(
        vmid=int(item["vmid"]),
        node=str(item.get("node", "")),
        name=str(item.get("name") or f"vm{item['vmid']}"),
        instance_id=str(item.get("instanceId") or item["vmid"]),
        user=str(item.get("ciuser") or "root"),
        ssh_keys=tuple(k for k in (str(x).strip() for x in keys) if k),
        hostname=str(item.get("hostname") or item.get("name") or f"vm{item['vmid']}"),
        addresses=_loopback(list(item.get("addresses") or [])),
        impostor_sshd=bool(item.get("impostorSshd")),
    )


class GuestFleet:
    """Reconciles running guests with the simulator's list; calls hooks on power changes."""

    def __init__(
        self, state_dir: Path, ssh_port: int, *, extra_ro_binds: dict[str, str] | None = None
    ) -> None:
        self.state_dir = state_dir
        self.ssh_port = ssh_port
        self.host_keys = HostKeyStore(state_dir / "hostkeys")
        self.extra_ro_binds = dict(extra_ro_binds or {})
        self.running: dict[int, RunningGuest] = {}
        self.known: dict[int, GuestSpec] = {}
        self.hooks: list[PowerHook] = []
        self.purge_hooks: list[Callable[[str], Awaitable[None]]] = []
        self.exec_hooks: list[Callable[[Any, str | None], None]] = []  # see RunningGuest.exec_hooks
        self._lock = asyncio.Lock()
        self.log: Callable[[str], None] = lambda message: print(f"[guests] {message}", flush=True)

    def root_for(self, instance_id: str) -> GuestRoot:
        return GuestRoot(
            self.state_dir / "roots" / "".join(c if c.isalnum() or c in "-_." else "_" for c in instance_id)
        )

    def by_address(self, address: str) -> RunningGuest | None:
        for guest in self.running.values():
            if address in guest.spec.addresses:
                return guest
        return None

    async def apply(self, items: list[dict[str, Any]]) -> None:
        """Make the fleet match one snapshot of the simulator's guest list."""
        async with self._lock:
            specs = {spec.vmid: spec for spec in map(parse_guest, items)}
            wanted = {
                item_vmid: specs[item_vmid]
                for item_vmid, item in ((int(i["vmid"]), i) for i in items)
                if item.get("status") == "running" and item.get("agentReady") and specs[item_vmid].addresses
            }
            for vmid, guest in list(self.running.items()):
                want = wanted.get(vmid)
                if (
                    want is None
                    or want.instance_id != guest.spec.instance_id
                    or want.addresses != guest.spec.addresses
                    or want.impostor_sshd != guest.spec.impostor_sshd
                ):
                    await self._power_off(vmid)
            gone = {spec.instance_id for spec in self.known.values()} - {
                s.instance_id for s in specs.values()
            }
            self.known = specs
            for instance_id in gone:
                await self._purge(instance_id)
            for vmid, spec in wanted.items():
                if vmid not in self.running:
                    try:
                        await self._power_on(spec)
                    except OSError as exc:  # e.g. the address:port is taken; retried on the next snapshot
                        self.log(f"guest {vmid} ({spec.name}) could not start its SSH server: {exc}")

    async def _power_on(self, spec: GuestSpec) -> None:
        root = self.root_for(spec.instance_id)
        root.seed(spec.identity)
        own = self.host_keys.get(spec.instance_id)
        install_host_keys(root, own)  # what the guest's disk holds (and its agent reads)
        presented = HostKeyStore.impostor() if spec.impostor_sshd else own
        guest = RunningGuest(
            spec=spec,
            root=root,
            host_keys=list(presented.values()),
            extra_ro_binds=self.extra_ro_binds,
            exec_hooks=self.exec_hooks,
        )
        try:
            await guest.start(self.ssh_port)
        except OSError:
            await guest.stop()
            raise
        self.running[spec.vmid] = guest
        for hook in self.hooks:
            await hook(spec, root, True)

    async def _power_off(self, vmid: int) -> None:
        guest = self.running.pop(vmid)
        await guest.stop()
        for hook in self.hooks:
            await hook(guest.spec, guest.root, False)

    async def _purge(self, instance_id: str) -> None:
        """The VM instance is gone (destroyed or re-created): its disk and host key go with it."""
        for hook in self.purge_hooks:
            await hook(instance_id)
        self.host_keys.forget(instance_id)
        shutil.rmtree(self.root_for(instance_id).root, ignore_errors=True)

    async def close(self) -> None:
        async with self._lock:
            for vmid in list(self.running):
                await self._power_off(vmid)
