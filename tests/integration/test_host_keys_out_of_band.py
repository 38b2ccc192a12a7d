"""The operator's adapters learn a VM's SSH host key out of band and hold the SSH server to it.

The proxmoxer adapter reads ``/etc/ssh/ssh_host_*_key.pub`` through ``agent/file-read`` of the real
simulator (the lab guest answers as qemu-guest-agent would); the asyncssh adapter, given that key's
fingerprint and algorithm, connects to the guest, and refuses an impostor before authenticating.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fixtures.guests import lab_net, make_impostor, wait_for_guest
from fixtures.pve import PveSim
from k3s_deploy import errors
from k3s_deploy.adapters.proxmox import ProxmoxerClient
from k3s_deploy.adapters.ssh import AsyncSshRunner
from k3s_deploy.ports.proxmox import ProxmoxCredentials
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy.services.k3scluster.hostkeys import ALGORITHMS, KEY_FILES, MAX_KEY_FILE, parse_public_key
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()


def _client(sim: PveSim, token_id: str | None = None) -> ProxmoxerClient:
    full = token_id or sim.token_id
    creds = ProxmoxCredentials(url=sim.url, token_id=full, token_secret=sim.token_secret_of(full),
                               ca_cert=Path(sim.ca).read_text())  # fmt: skip
    return ProxmoxerClient(creds, timeout=10, concurrency=2)


async def _boot(sim: PveSim, guests: GuestsService, vmid: int, key: asyncssh.SSHKey) -> Any:
    api = sim.api()
    upid = await asyncio.to_thread(api.nodes("pve1").qemu(9001).clone.post, newid=vmid, name=f"hk-{vmid}")
    await asyncio.to_thread(sim.wait_task, upid)
    vm = api.nodes("pve1").qemu(vmid)
    public = key.export_public_key().decode().strip()
    await asyncio.to_thread(vm.config.put, ciuser="ubuntu", sshkeys=urllib.parse.quote(public, safe=""),
                            ipconfig0=f"ip={NET}{vmid % 100}/24,gw={NET}1")  # fmt: skip
    await asyncio.to_thread(sim.wait_task, await asyncio.to_thread(vm.status.start.post))
    await wait_for_guest(guests, vmid, within=30)
    return vm


async def test_key_read_through_the_agent_opens_the_guest_and_refuses_an_impostor(
    pve_sim: PveSim, pve_guests: GuestsService, client_key: asyncssh.SSHKey
) -> None:
    await _boot(pve_sim, pve_guests, 451, client_key)
    pve = _client(pve_sim)
    key = parse_public_key(await pve.read_guest_file("pve1", 451, KEY_FILES[0], max_bytes=MAX_KEY_FILE))
    assert key.key_type == "ssh-ed25519"
    runner = AsyncSshRunner(connect_timeout=5, attempts=1)
    target = SshTarget(host=f"{NET}51", port=pve_guests.ssh_port, user="ubuntu",
                       private_key=client_key.export_private_key().decode(),
                       pinned_host_key=key.fingerprint, host_key_algorithms=ALGORITHMS[key.key_type])  # fmt: skip
    result = await runner.run(target, "echo in", check=True)
    assert result.stdout.strip() == "in"
    assert result.host_key == key.fingerprint and result.host_public_key == key.line
    # the ecdsa key the guest also holds is a second, different pin; offering only its algorithm works too
    ecdsa = parse_public_key(await pve.read_guest_file("pve1", 451, KEY_FILES[1], max_bytes=MAX_KEY_FILE))
    by_ecdsa = SshTarget(**{**target.__dict__, "pinned_host_key": ecdsa.fingerprint,
                            "host_key_algorithms": ALGORITHMS[ecdsa.key_type]})  # fmt: skip
    assert (await runner.run(by_ecdsa, "true")).host_key == ecdsa.fingerprint

    execs = pve_guests.chaos.execs
    await make_impostor(pve_sim, pve_guests, 451)
    with pytest.raises(errors.HostKeyMismatch):
        await runner.run(target, "touch /tmp/the-impostor-ran-this")
    assert pve_guests.chaos.execs == execs
    # still the real key on the guest's disk, and nothing written there
    assert (
        parse_public_key(await pve.read_guest_file("pve1", 451, KEY_FILES[0], max_bytes=MAX_KEY_FILE)) == key
    )
    root = pve_guests.fleet.running[451].root if pve_guests.fleet else None
    assert root is not None and not root.path("/tmp/the-impostor-ran-this").exists()


async def test_agent_read_failures_map_onto_the_error_tree(
    pve_sim: PveSim, pve_guests: GuestsService, client_key: asyncssh.SSHKey
) -> None:
    vm = await _boot(pve_sim, pve_guests, 452, client_key)
    pve = _client(pve_sim)
    with pytest.raises(errors.GuestFileUnreadable, match="No such file or directory"):
        await pve.read_guest_file("pve1", 452, KEY_FILES[2], max_bytes=MAX_KEY_FILE)
    with pytest.raises(errors.GuestFileUnreadable, match="larger than 8 bytes"):
        await pve.read_guest_file("pve1", 452, KEY_FILES[0], max_bytes=8)
    with pytest.raises(errors.ProxmoxPermissionDenied, match=r"VM\.GuestAgent\.FileRead"):
        await _client(pve_sim, "root@pam!readonly").read_guest_file("pve1", 452, KEY_FILES[0], max_bytes=64)
    await asyncio.to_thread(pve_sim.wait_task, await asyncio.to_thread(vm.status.stop.post))
    with pytest.raises(errors.GuestNotReady):
        await pve.read_guest_file("pve1", 452, KEY_FILES[0], max_bytes=MAX_KEY_FILE)
    await asyncio.to_thread(vm.config.put, delete="agent")
    with pytest.raises(errors.GuestFileUnreadable, match="No QEMU guest agent configured"):
        await pve.read_guest_file("pve1", 452, KEY_FILES[0], max_bytes=MAX_KEY_FILE)
