"""``agent/file-read`` as qemu-server answers it, carried out by the lab guest itself.

The guest's disk holds the SSH host keys its server presents, and the simulator reads them through
the guest agent; a guest started with the impostor knob presents other keys than its disk holds.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
from typing import Any

import asyncssh
import pytest
from proxmoxer import ResourceException

from fixtures.guests import lab_net, make_impostor, ssh_options, wait_for_guest
from fixtures.pve import PveSim
from integration.pvesim.helpers import raw
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()
ED25519 = "/etc/ssh/ssh_host_ed25519_key.pub"


async def _running_guest(sim: PveSim, guests: GuestsService, vmid: int, key: asyncssh.SSHKey) -> Any:
    api = sim.api()
    upid = await asyncio.to_thread(api.nodes("pve1").qemu(9001).clone.post, newid=vmid, name=f"fr-{vmid}")
    assert (await asyncio.to_thread(sim.wait_task, upid))["exitstatus"] == "OK"
    vm = api.nodes("pve1").qemu(vmid)
    public = key.export_public_key().decode().strip()
    await asyncio.to_thread(vm.config.put, ciuser="ubuntu", sshkeys=urllib.parse.quote(public, safe=""),
                            ipconfig0=f"ip={NET}{vmid % 200}/24,gw={NET}1")  # fmt: skip
    assert (await asyncio.to_thread(sim.wait_task, await asyncio.to_thread(vm.status.start.post)))[
        "exitstatus"
    ] == "OK"
    await wait_for_guest(guests, vmid, within=30)
    return vm


async def _presented(guests: GuestsService, address: str, key: asyncssh.SSHKey) -> str:
    options = ssh_options(key, server_host_key_algs=["ssh-ed25519"])
    async with asyncssh.connect(address, guests.ssh_port, **options) as conn:
        server_key = conn.get_server_host_key()
    assert server_key is not None
    return server_key.export_public_key().decode().strip()


async def test_file_read_returns_the_host_key_the_guest_presents(
    pve_sim: PveSim, pve_guests: GuestsService, client_key: asyncssh.SSHKey
) -> None:
    vm = await _running_guest(pve_sim, pve_guests, 431, client_key)
    read = await asyncio.to_thread(vm.agent("file-read").get, file=ED25519)
    assert read["content"].startswith("ssh-ed25519 ") and "truncated" not in read
    assert read["bytes-read"] == len(read["content"])
    assert read["content"].strip() == await _presented(pve_guests, f"{NET}31", client_key)
    ecdsa = await asyncio.to_thread(vm.agent("file-read").get, file="/etc/ssh/ssh_host_ecdsa_key.pub")
    assert ecdsa["content"].startswith("ecdsa-sha2-nistp256 ")

    part = await asyncio.to_thread(vm.agent("file-read").get, file=ED25519, count=11, offset=4)
    assert part["content"] == read["content"][4:15] and part["truncated"] == 1
    encoded = await asyncio.to_thread(vm.agent("file-read").get, file=ED25519, decode=0)
    assert base64.b64decode(encoded["content"]).decode() == read["content"]

    with pytest.raises(ResourceException) as missing:
        await asyncio.to_thread(vm.agent("file-read").get, file="/etc/ssh/nope.pub")
    assert missing.value.status_code == 500
    assert missing.value.content == (
        "Agent error: failed to open file '/etc/ssh/nope.pub' (mode: 'r'): No such file or directory"
    )
    too_much = raw(pve_sim, "GET", "/nodes/pve1/qemu/431/agent/file-read",
                   params={"file": ED25519, "count": 16 * 1024 * 1024 + 1})  # fmt: skip
    assert too_much.status_code == 400 and "count" in too_much.json()["errors"]
    denied = raw(pve_sim, "GET", "/nodes/pve1/qemu/431/agent/file-read", params={"file": ED25519},
                 token="root@pam!readonly")  # fmt: skip
    assert denied.status_code == 403
    assert (
        denied.reason
        == "Permission check failed (/vms/431, VM.GuestAgent.FileRead|VM.GuestAgent.Unrestricted)"
    )

    # a symlink inside the guest resolves inside the guest, never on the host
    link = pve_guests.fleet.running[431].root.path("/etc/escape") if pve_guests.fleet else None
    assert link is not None
    link.symlink_to("/etc/hostname")
    through = await asyncio.to_thread(vm.agent("file-read").get, file="/etc/escape")
    assert through["content"].strip() == "fr-431"

    await asyncio.to_thread(pve_sim.wait_task, await asyncio.to_thread(vm.status.stop.post))
    with pytest.raises(ResourceException) as stopped:
        await asyncio.to_thread(vm.agent("file-read").get, file=ED25519)
    assert stopped.value.content == "VM 431 is not running"


async def test_an_impostor_guest_presents_keys_its_disk_does_not_hold(
    pve_sim: PveSim, pve_guests: GuestsService, client_key: asyncssh.SSHKey
) -> None:
    vm = await _running_guest(pve_sim, pve_guests, 432, client_key)
    own = (await asyncio.to_thread(vm.agent("file-read").get, file=ED25519))["content"].strip()
    assert own == await _presented(pve_guests, f"{NET}32", client_key)
    await make_impostor(pve_sim, pve_guests, 432)
    presented = await _presented(pve_guests, f"{NET}32", client_key)
    assert presented != own
    assert (await asyncio.to_thread(vm.agent("file-read").get, file=ED25519))["content"].strip() == own


def test_without_a_guest_process_the_agent_finds_no_file(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    vm = api.nodes("pve1").qemu(110)
    pve_sim.wait_task(vm.status.start.post())
    deadline = 200
    while deadline:
        try:
            vm.agent.ping.post()
            break
        except ResourceException:
            deadline -= 1
    with pytest.raises(ResourceException) as missing:
        vm.agent("file-read").get(file=ED25519)
    assert missing.value.content.startswith("Agent error: failed to open file")
    pve_sim.wait_task(vm.status.stop.post())
    stopped = raw(pve_sim, "GET", "/nodes/pve1/qemu/110/agent/file-read", params={"file": ED25519})
    assert stopped.status_code == 500 and stopped.reason == "VM 110 is not running"
    api.nodes("pve1").qemu(110).config.put(delete="agent")
    no_agent = raw(pve_sim, "GET", "/nodes/pve1/qemu/110/agent/file-read", params={"file": ED25519})
    assert no_agent.status_code == 500 and no_agent.reason == "No QEMU guest agent configured"
