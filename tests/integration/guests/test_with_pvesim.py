"""Lab guests following the real Proxmox VE simulator: VMs made and powered through its API (proxmoxer)."""

from __future__ import annotations

import asyncio
import urllib.parse

import asyncssh
import pytest

from fixtures.guests import (
    Kubectl,
    LabGuest,
    eventually,
    lab_net,
    nodes,
    pointed_at,
    ready,
    ssh_options,
    wait_for_guest,
)
from fixtures.pve import PveSim
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()


async def _task(sim: PveSim, upid: str) -> None:
    status = await asyncio.to_thread(sim.wait_task, upid)
    assert status.get("exitstatus") == "OK", status


async def test_vm_made_through_the_api_is_reachable_over_ssh_and_runs_k3s(
    pve_sim: PveSim, pve_guests: GuestsService, client_key: asyncssh.SSHKey, host_kubectl: Kubectl
) -> None:
    api = pve_sim.api()
    await _task(
        pve_sim, await asyncio.to_thread(api.nodes("pve1").qemu(9001).clone.post, newid=420, name="lab-420")
    )
    vm = api.nodes("pve1").qemu(420)
    key = client_key.export_public_key().decode().strip()
    await asyncio.to_thread(
        vm.config.put,
        ciuser="k3s",
        sshkeys=urllib.parse.quote(key, safe=""),
        ipconfig0=f"ip={NET}20/24,gw={NET}1",
    )
    await _task(pve_sim, await asyncio.to_thread(vm.status.start.post))
    await wait_for_guest(pve_guests, 420, within=30)

    options = ssh_options(client_key, "k3s")
    async with asyncssh.connect(f"{NET}20", pve_guests.ssh_port, **options) as conn:
        result = await conn.run("hostname; id -un; sudo test -w /etc && echo root-ok", check=True)
        first_key = conn.get_server_host_key()
    assert result.stdout.splitlines()[0] == "lab-420"
    assert result.stdout.splitlines()[-1] == "root-ok"
    assert first_key is not None
    guest = LabGuest(pve_guests, f"{NET}20", client_key, user="k3s")
    installed = await guest.install_k3s("--cluster-init", env="INSTALL_K3S_VERSION=v1.31.4+k3s1")
    assert installed.exit_status == 0, installed.stderr
    kubeconfig = pointed_at(await guest.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}20")

    async def node_ready_is(value: str) -> bool:
        code, _, _ = await host_kubectl(kubeconfig, "get --raw /readyz")
        if code != 0:  # the API is not back yet
            return False
        return ready((await nodes(host_kubectl, kubeconfig))["lab-420"]) == value

    assert await node_ready_is("True")

    await _task(pve_sim, await asyncio.to_thread(vm.status.stop.post))
    await wait_for_guest(pve_guests, 420, present=False, within=30)
    with pytest.raises(OSError):
        await asyncssh.connect(f"{NET}20", pve_guests.ssh_port, **options)
    # a lone server's API goes with its VM, as on real K3s (nothing else answers at its address)
    code, _, err = await host_kubectl(kubeconfig, "get nodes -o json")
    assert code != 0 and f"{NET}20" in err, err

    await _task(pve_sim, await asyncio.to_thread(vm.status.start.post))
    await wait_for_guest(pve_guests, 420, within=30)
    async with asyncssh.connect(f"{NET}20", pve_guests.ssh_port, **options) as conn:
        again = conn.get_server_host_key()
    assert again is not None and again.public_data == first_key.public_data
    await eventually(lambda: node_ready_is("True"))
    assert (await guest.run("k3s --version", check=True)).stdout.startswith("k3s version v1.31.4+k3s1 ")
