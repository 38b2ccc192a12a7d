"""Bad inputs end in Stalled (or Ready=False while retrying) with a reason, an Event, and no retry storm."""

from __future__ import annotations

import time

import asyncssh
import pytest

from k3s_deploy_lab.sample_cluster import new_ssh_key

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_missing_ssh_secret_stalls(lab: Lab) -> None:
    manifest = lab.cluster("nokey", servers=1, agents=0)
    manifest["spec"]["ssh"]["privateKeySecretRef"] = {"name": "does-not-exist", "key": "ssh-privatekey"}
    lab.apply(manifest)
    stalled = lab.wait_condition("nokey", "Stalled", timeout=120)
    assert stalled["reason"] == "SecretNotFound" and "does-not-exist" in stalled["message"]
    assert lab.condition("nokey", "Ready")["status"] == "False"
    assert lab.events("nokey", "SecretNotFound")


def test_wrong_ssh_key_stalls_without_retry_storm(lab: Lab) -> None:
    # The VMs get the lab's public key, but the operator is given an unrelated private key.
    other_private, _ = new_ssh_key()
    lab.kubectl(
        "create", "secret", "generic", "other-key", "-n", lab.namespace,
        f"--from-literal=ssh-privatekey={other_private}",
    )  # fmt: skip
    manifest = lab.cluster("wrongkey", servers=1, agents=0)
    manifest["spec"]["ssh"]["privateKeySecretRef"] = {"name": "other-key", "key": "ssh-privatekey"}
    lab.apply(manifest)
    stalled = lab.wait_condition("wrongkey", "Stalled", timeout=240)
    assert stalled["reason"] == "SshAuthFailed" and "wrongkey-server-0" in stalled["message"]
    time.sleep(10)  # several resync periods of the test operator (3 s)
    events = lab.events("wrongkey", "SshAuthFailed")
    assert len(events) == 1 and events[0].get("count", 1) == 1, events


def test_bad_version_is_refused_by_the_installer(lab: Lab) -> None:
    lab.apply(lab.cluster("badver", servers=1, agents=0, version="v1.99.0+k3s1"))
    stalled = lab.wait_condition("badver", "Stalled", timeout=240)
    assert stalled["reason"] == "K3sInstallFailed"
    assert "badver-server-0" in stalled["message"]


def test_unreachable_node_keeps_retrying_with_backoff(lab: Lab) -> None:
    manifest = lab.cluster("noport", servers=1, agents=0)
    manifest["spec"]["ssh"]["port"] = 1  # nothing listens there
    lab.apply(manifest)
    reconciling = lab.wait_condition("noport", "Reconciling", timeout=240)
    deadline = time.monotonic() + 60
    while reconciling["reason"] != "SshUnavailable" and time.monotonic() < deadline:
        time.sleep(1)
        reconciling = lab.condition("noport", "Reconciling") or reconciling
    assert reconciling["reason"] == "SshUnavailable"
    assert lab.condition("noport", "Stalled") is None
    assert lab.condition("noport", "Ready")["status"] != "True"


def test_changed_host_key_is_refused(lab: Lab) -> None:
    lab.apply(lab.cluster("hostkey", servers=1, agents=0))
    lab.wait_ready("hostkey", timeout=240)
    node = (lab.get("k3sc", "hostkey") or {})["status"]["nodes"][0]
    pinned = node["hostKeyFingerprint"]
    # The machine behind the address now presents another host key (reinstalled, or someone else):
    # replace the guest's key and power-cycle it, as the lab loads host keys at boot.
    keys = [
        path
        for path in (lab.sim.dir / "guests" / "hostkeys").glob("*.key")
        if asyncssh.read_private_key(str(path)).get_fingerprint("sha256") == pinned
    ]
    assert len(keys) == 1, "the pinned key is the one the guest presented"
    new_key = asyncssh.generate_private_key("ssh-ed25519")
    keys[0].write_bytes(new_key.export_private_key())
    api = lab.sim.api()
    vm = api.nodes(node["pveNode"]).qemu(node["vmid"])
    lab.sim.wait_task(vm.status.stop.post())
    lab.sim.wait_task(vm.status.start.post())
    stalled = lab.wait_condition("hostkey", "Stalled", timeout=180)
    assert stalled["reason"] == "HostKeyChanged", stalled
    presented = str(new_key.get_fingerprint("sha256"))
    assert pinned in stalled["message"] and presented in stalled["message"]
    assert lab.condition("hostkey", "Ready")["status"] == "False"
    assert len(lab.events("hostkey", "HostKeyChanged")) == 1
    # the user trusts the rebuilt machine: relaxing the policy re-pins the new key and recovers
    lab.kubectl(
        "patch", "k3sc", "hostkey", "-n", lab.namespace, "--type=merge",
        "-p", '{"spec":{"ssh":{"hostKeyPolicy":"AcceptChanged"}}}',
    )  # fmt: skip
    lab.wait_ready("hostkey", timeout=180)
    assert (lab.get("k3sc", "hostkey") or {})["status"]["nodes"][0]["hostKeyFingerprint"] == presented
