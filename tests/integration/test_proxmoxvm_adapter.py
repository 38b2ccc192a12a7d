"""The proxmoxer adapter against the simulator: auth modes, TLS trust, encodings, error mapping."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

import pytest

from k3s_deploy.adapters.proxmox import ProxmoxerClient
from k3s_deploy.errors import (
    CredentialsError,
    GuestNotReady,
    ProxmoxBusy,
    ProxmoxNotFound,
    ProxmoxPermissionDenied,
    ProxmoxRejected,
    ProxmoxUnavailable,
)
from k3s_deploy.ports.proxmox import ProxmoxCredentials

pytestmark = pytest.mark.integration

KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a+b/c=d@host\n"
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7+/== second key"
)


def creds(sim: Any, **overrides: Any) -> ProxmoxCredentials:
    base: dict[str, Any] = {
        "url": sim.url,
        "token_id": sim.token_id,
        "token_secret": sim.token_secret,
        "ca_cert": Path(sim.ca).read_text(),
    }
    base.update(overrides)
    return ProxmoxCredentials(**base)


def client(sim: Any, timeout: float = 10.0, **overrides: Any) -> ProxmoxerClient:
    return ProxmoxerClient(creds(sim, **overrides), timeout=timeout, concurrency=4)


async def test_token_reads_configures_and_encodes(pve_sim: Any) -> None:
    pve = client(pve_sim)
    vms = {vm.vmid: vm for vm in await pve.cluster_vms()}
    assert vms[9000].template and "shared" in vms[9000].tags and vms[100].status == "running"
    await pve.update_config("pve3", 102, {"sshkeys": KEYS, "onboot": True, "tags": "a;b"})
    config = await pve.vm_config("pve3", 102)
    assert config["sshkeys"] == KEYS  # stored URL-encoded by PVE, decoded by the adapter
    assert int(config["onboot"]) == 1
    raw = pve_sim.api().nodes("pve3").qemu(102).config.get()
    assert "%2B" in raw["sshkeys"] and "%2F" in raw["sshkeys"]
    upid = await pve.power("pve3", 102, "start")
    pve_sim.wait_task(upid)
    assert (await pve.task_status("pve3", upid)).succeeded
    assert await pve.vm_status("pve3", 102) == "running"
    pve.close()


async def test_node_tasks_show_running_and_finished_tasks_since_a_time(pve_sim: Any) -> None:
    pve = client(pve_sim)
    done = await pve.power("pve3", 102, "start")
    pve_sim.wait_task(done)
    pve_sim.set_timing(tasks={"qmclone": 3000})  # x0.01: 30 s, running while we look
    running = await pve.clone("pve1", 9001, 702, name="nt")
    since = min(int(u.split(":")[4], 16) for u in (done, running))
    listed = {t.upid: t for t in await pve.node_tasks("pve1", since=since, limit=50)}
    assert listed[running].running and listed[running].exitstatus is None
    assert done not in listed  # another node's task
    other = {t.upid: t for t in await pve.node_tasks("pve3", since=since, limit=50)}
    assert not other[done].running and other[done].succeeded and other[done].exitstatus == "OK"
    pve.close()


async def test_a_guest_agent_read_waiting_on_a_booting_guest_does_not_hold_up_other_calls(
    pve_sim: Any,
) -> None:
    import asyncio
    import time

    pve = ProxmoxerClient(creds(pve_sim), timeout=10.0, concurrency=1)
    pve_sim.set_timing(bootDelay=100_000, agentTimeout=300)  # x0.01: booting for good, 3 s per agent read
    pve_sim.wait_task(await pve.power("pve3", 102, "start"))
    agent = asyncio.create_task(pve.agent_interfaces("pve3", 102))
    await asyncio.sleep(0.3)  # the agent read is in flight, waiting for the guest
    started = time.monotonic()
    await pve.vm_config("pve3", 102)
    assert time.monotonic() - started < 2.0 and not agent.done()
    with pytest.raises(GuestNotReady):
        await agent
    pve.close()


async def test_password_login_and_bad_credentials(pve_sim: Any) -> None:
    ok = client(
        pve_sim, token_id=None, token_secret=None, username=pve_sim.username, password=pve_sim.password
    )
    assert await ok.nodes()
    wrong = client(pve_sim, token_secret="0" * 36)
    with pytest.raises(CredentialsError) as refused:
        await wrong.cluster_vms()
    assert "401" in refused.value.message and "0" * 36 not in refused.value.message
    bad_pw = client(
        pve_sim, token_id=None, token_secret=None, username=pve_sim.username, password="nope-nope"
    )
    with pytest.raises(CredentialsError):
        await bad_pw.nodes()


async def test_tls_is_verified_or_pinned(pve_sim: Any) -> None:
    with pytest.raises(CredentialsError) as untrusted:
        await client(pve_sim, ca_cert=None).nodes()
    assert untrusted.value.reason == "TLSVerificationFailed"
    host, port = pve_sim.host.rsplit(":", 1)
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, int(port))))
    digest = hashlib.sha256(der).hexdigest().upper()
    pinned = ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    assert await client(pve_sim, ca_cert=None, fingerprint=pinned).nodes()
    wrong = ":".join(["AA"] * 32)
    with pytest.raises(CredentialsError) as mismatch:
        await client(pve_sim, ca_cert=None, fingerprint=wrong).nodes()
    assert mismatch.value.reason == "TLSVerificationFailed"
    assert "does not match the pinned SHA-256" in mismatch.value.message


async def test_error_mapping(pve_sim: Any) -> None:
    readonly = client(
        pve_sim, token_id="root@pam!readonly", token_secret=pve_sim.token_secret_of("root@pam!readonly")
    )
    with pytest.raises(ProxmoxPermissionDenied):
        await readonly.update_config("pve3", 102, {"cores": 4})
    pve = client(pve_sim)
    with pytest.raises(ProxmoxNotFound):
        await pve.vm_config("pve1", 101)  # lives on pve2
    with pytest.raises(ProxmoxRejected):
        await pve.update_config("pve3", 102, {"cores": "many"})
    with pytest.raises(ProxmoxBusy) as taken:
        await pve.next_vmid(100)
    assert taken.value.reason == "VmidTaken"
    with pytest.raises(ProxmoxRejected):
        await pve.update_config("pve3", 102, {"sshkeys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5A broken"})
    with pytest.raises(GuestNotReady):
        await pve.agent_interfaces("pve3", 102)  # stopped VM
    pve_sim.lock_vm(102, "backup", seconds=30)
    with pytest.raises(ProxmoxBusy):
        await pve.update_config("pve3", 102, {"cores": 4})
    pve_sim.set_faults(errors=[{"match": "GET /nodes", "status": 503, "message": "Service Unavailable"}])
    with pytest.raises(ProxmoxUnavailable):
        await pve.nodes()
    pve_sim.set_faults(errors=[], latency=2.0)
    with pytest.raises(ProxmoxUnavailable):
        await client(pve_sim, timeout=0.5).nodes()


async def test_every_call_is_counted_in_the_metrics(pve_sim: Any) -> None:
    from k3s_deploy import metrics

    def calls(endpoint: str, method: str = "GET") -> float:
        value = metrics.REGISTRY.get_sample_value(
            f"{metrics.NAMESPACE}_proxmox_requests_total",
            {"endpoint": endpoint, "method": method, "result": "ok"},
        )
        return value or 0.0

    before = calls("/cluster/resources")
    pve = client(pve_sim)
    await pve.cluster_vms()
    await pve.cluster_vms()
    pve.close()
    assert calls("/cluster/resources") == before + 2
