"""The operator's own SSH adapter (adapters/ssh.py) against lab guests: sudo, fetch, K3s, host-key pinning."""

from __future__ import annotations

import asyncssh
import pytest
import yaml

from fixtures.guests import FakeGuestsEndpoint, lab_net, wait_for_guest
from k3s_deploy import errors
from k3s_deploy.adapters.ssh import AsyncSshRunner
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()


async def test_operator_adapter_installs_k3s_and_pins_the_host_key(
    guests: GuestsService, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey
) -> None:
    assert guests.k3s is not None
    public = client_key.export_public_key().decode()
    await guest_feed.run_vm(501, f"{NET}1", keys=[public], name="op-srv", instance_id="first")
    await wait_for_guest(guests, 501)
    runner = AsyncSshRunner(connect_timeout=5, attempts=2, backoff=0.1)
    target = SshTarget(host=f"{NET}1", port=guests.ssh_port, user="ubuntu",
                       private_key=client_key.export_private_key().decode())  # fmt: skip

    pinned = await runner.host_key(target)
    assert pinned.startswith("SHA256:")
    target = SshTarget(**{**target.__dict__, "pinned_host_key": pinned})
    install = await runner.run(
        target,
        f"curl -sfL {guests.k3s.install_url} | INSTALL_K3S_VERSION=v1.31.4+k3s1 sh -s - server",
        check=True,
    )
    assert install.host_key == pinned
    k3s_yaml = yaml.safe_load(await runner.fetch(target, "/etc/rancher/k3s/k3s.yaml"))
    assert k3s_yaml["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    with pytest.raises(errors.CommandFailed):
        await runner.fetch(target, "/etc/rancher/k3s/missing.yaml")

    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    with pytest.raises(errors.SshAuthFailed):
        await runner.run(
            SshTarget(host=target.host, port=target.port, user="ubuntu", private_key=stranger), "true"
        )

    # The VM is re-created (new instance): a new host key, which the pinned target refuses.
    await guest_feed.destroy_vm(501)
    await wait_for_guest(guests, 501, present=False)
    await guest_feed.run_vm(501, f"{NET}1", keys=[public], name="op-srv", instance_id="second")
    await wait_for_guest(guests, 501)
    with pytest.raises(errors.HostKeyMismatch):
        await runner.run(target, "true")
