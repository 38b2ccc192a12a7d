"""Lab guests over real SSH: login, host keys, the guest's own filesystem, SFTP, sudo."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncssh
import pytest

from fixtures.guests import FakeGuestsEndpoint, lab_net, ssh_options, wait_for_guest
from k3s_deploy_lab.guests.service import GuestsService

pytestmark = pytest.mark.integration
NET = lab_net()


async def _connect(
    service: GuestsService, address: str, key: asyncssh.SSHKey, **kw: object
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(address, service.ssh_port, **ssh_options(key, **kw))


async def test_login_with_the_cloud_init_key_and_user_only(
    guests: GuestsService, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey
) -> None:
    await guest_feed.run_vm(101, f"{NET}11", keys=[client_key.export_public_key().decode()])
    await wait_for_guest(guests, 101)
    async with await _connect(guests, f"{NET}11", client_key) as conn:
        result = await conn.run("echo out; echo err >&2; hostname; exit 3")
    assert result.exit_status == 3
    assert result.stdout == "out\nvm101\n"
    assert result.stderr == "err\n"

    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(guests, f"{NET}11", stranger)
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(guests, f"{NET}11", client_key, username="root")


async def test_stopped_vm_stops_answering(
    guests: GuestsService, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey
) -> None:
    await guest_feed.run_vm(102, f"{NET}12", keys=[client_key.export_public_key().decode()])
    await wait_for_guest(guests, 102)
    conn = await _connect(guests, f"{NET}12", client_key)
    await guest_feed.stop_vm(102)
    await wait_for_guest(guests, 102, present=False)
    await conn.wait_closed()
    with pytest.raises(OSError):
        await _connect(guests, f"{NET}12", client_key)


async def test_host_key_stable_across_restart_new_after_recreation(
    guests: GuestsService, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey
) -> None:
    keys = [client_key.export_public_key().decode()]
    await guest_feed.run_vm(103, f"{NET}13", keys=keys, instance_id="inst-a")

    async def host_key() -> str:
        await wait_for_guest(guests, 103)
        async with await _connect(guests, f"{NET}13", client_key) as conn:
            server_key = conn.get_server_host_key()
            assert server_key is not None
            return str(server_key.get_fingerprint())

    first = await host_key()
    async with await _connect(guests, f"{NET}13", client_key) as conn:
        await conn.run("echo kept > /root/marker", check=True)
    await guest_feed.stop_vm(103)
    await wait_for_guest(guests, 103, present=False)
    await guest_feed.start_vm(103)
    assert await host_key() == first
    async with await _connect(guests, f"{NET}13", client_key) as conn:
        assert (await conn.run("cat /root/marker", check=True)).stdout == "kept\n"

    await guest_feed.destroy_vm(103)
    await wait_for_guest(guests, 103, present=False)
    await guest_feed.run_vm(103, f"{NET}13", keys=keys, instance_id="inst-b")
    assert await host_key() != first
    async with await _connect(guests, f"{NET}13", client_key) as conn:
        assert (await conn.run("test -e /root/marker")).exit_status == 1


async def test_guests_have_separate_filesystems_sftp_and_sudo(
    guests: GuestsService, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey
) -> None:
    keys = [client_key.export_public_key().decode()]
    await guest_feed.run_vm(104, f"{NET}14", keys=keys)
    await guest_feed.run_vm(105, f"{NET}15", keys=keys)
    await wait_for_guest(guests, 104)
    await wait_for_guest(guests, 105)
    async with (
        await _connect(guests, f"{NET}14", client_key) as a,
        await _connect(guests, f"{NET}15", client_key) as b,
    ):
        made = await a.run(
            "sudo mkdir -p /etc/rancher/k3s && echo a | sudo tee /etc/rancher/k3s/who", check=True
        )
        assert made.stdout == "a\n"
        assert (await b.run("cat /etc/rancher/k3s/who")).exit_status != 0
        assert (await b.run("ls /etc/rancher")).exit_status == 2
        # Nothing of the host's own /etc or /root leaks in.
        assert (await a.run("cat /etc/hostname", check=True)).stdout == "vm104\n"
        assert (await a.run("grep -c ubuntu /etc/passwd", check=True)).stdout == "1\n"
        assert (await a.run("whoami", check=True)).stdout.strip() in {"root", "ubuntu"}
        assert (await a.run("pwd", check=True)).stdout == "/home/ubuntu\n"
        # SFTP is confined to the guest too.
        async with b.start_sftp_client() as sftp:
            async with sftp.open("/tmp/uploaded", "w") as f:
                await f.write("via sftp\n")
            assert await sftp.exists("/etc/hostname")
            assert not await sftp.exists("/etc/rancher/k3s/who")
        assert (await b.run("cat /tmp/uploaded", check=True)).stdout == "via sftp\n"
        assert (await a.run("test -e /tmp/uploaded")).exit_status == 1
        # stdin reaches the command.
        assert (await a.run("wc -l", input="1\n2\n3\n", check=True)).stdout.strip() == "3"


async def test_openssh_client_and_scp_work_against_a_guest(
    guests: GuestsService, guest_feed: FakeGuestsEndpoint, client_key: asyncssh.SSHKey, tmp_path: Path
) -> None:
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("OpenSSH client not installed")
    await guest_feed.run_vm(106, f"{NET}16", keys=[client_key.export_public_key().decode()])
    await wait_for_guest(guests, 106)
    identity = tmp_path / "id_ed25519"
    client_key.write_private_key(str(identity))
    identity.chmod(0o600)
    known = tmp_path / "known_hosts"
    common = ["-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=accept-new",
              "-i", str(identity), "-F", "/dev/null"]  # fmt: skip

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await run(
        ssh, *common, "-p", str(guests.ssh_port), f"ubuntu@{NET}16", "uname -s; cat /etc/hostname"
    )
    assert (code, out) == (0, "Linux\nvm106\n")
    local = tmp_path / "payload"
    local.write_text("scp payload\n")
    code, out = await run(
        "scp", *common, "-P", str(guests.ssh_port), str(local), f"ubuntu@{NET}16:/tmp/payload"
    )
    assert code == 0, out
    code, out = await run(ssh, *common, "-p", str(guests.ssh_port), f"ubuntu@{NET}16", "cat /tmp/payload")
    assert (code, out) == (0, "scp payload\n")
