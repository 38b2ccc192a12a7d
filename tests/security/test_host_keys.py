"""Attack tests for SSH host keys (docs/security.md, "Host keys and join tokens").

- T3/T1, a man in the middle at a node's address: the guest's disk (and so its Proxmox guest agent)
  holds one key, the SSH server answering at the VM's address presents another. The operator must
  refuse it before running anything there.
- Losing status (a restore, a GitOps re-apply) plus an operator restart must not start trust on
  first use again: pins come from the Secret <cluster>-host-keys.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from k3s_deploy_lab import sample_cluster

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
FILE_READ = "GET /nodes/{node}/qemu/{vmid}/agent/file-read"


def _guest_execs(lab: Lab) -> int:
    ready = json.loads((lab.sim.dir / "guests" / "ready.json").read_text())
    return int(requests.get(f"{ready['httpUrl']}/lab/v1/chaos", timeout=10).json()["execs"])


def _guest_roots(lab: Lab) -> list[Any]:
    roots = lab.sim.dir / "guests" / "roots"
    return sorted(p for p in roots.iterdir() if p.is_dir()) if roots.exists() else []


def test_a_man_in_the_middle_is_refused_before_any_command_runs(lab: Lab) -> None:
    # Every VM cloned from the sample template gets an SSH server that presents other keys than
    # its disk holds (the lab knob travels with the image).
    api = lab.sim.api()
    templates = [vm for vm in api.cluster.resources.get(type="vm")
                 if vm.get("template") and vm.get("name") == sample_cluster.TEMPLATE]  # fmt: skip
    assert templates
    for vm in templates:
        lab.sim.admin("PUT", f"vms/{vm['vmid']}/guest", {"impostorSshd": True})
    execs = _guest_execs(lab)
    lab.apply(lab.cluster("mitm", servers=1, agents=0))

    stalled = lab.wait_condition("mitm", "Stalled", timeout=240)
    assert stalled["reason"] == "HostKeyMismatch", stalled
    assert "man in the middle" in stalled["message"] and "nothing was run there" in stalled["message"]
    # nothing ran on the guest: no exec request reached any guest, no K3s artefact on its disk
    assert _guest_execs(lab) == execs
    roots = _guest_roots(lab)
    assert roots, "the impostor guest booted"
    for root in roots:
        assert not (root / "usr/local/bin/k3s").exists()
        assert not (root / "etc/systemd/system/k3s.service").exists()
    assert lab.get("secret", "mitm-host-keys") is None, "no key was pinned"
    assert not lab.events("mitm", "HostKeyPinned") and not lab.events("mitm", "Installing")
    assert lab.sim.counts().get(FILE_READ, 0) >= 1, "the key was read through the guest agent"


def test_wiping_status_and_restarting_the_operator_re_pins_nothing(lab: Lab) -> None:
    lab.apply(lab.cluster("pins", servers=1, agents=1))
    lab.wait_ready("pins", timeout=300)
    before = lab.get("secret", "pins-host-keys")
    assert before is not None and before["type"] == "Opaque"
    assert before["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "k3s-deploy"
    nodes = {n["name"]: n for n in lab.get("k3sc", "pins")["status"]["nodes"]}
    assert sorted(before["data"]) == sorted(f"{name}.{n['vmid']}" for name, n in nodes.items())
    reads = lab.sim.counts().get(FILE_READ, 0)
    pinned_events = sum(e.get("count", 1) for e in lab.events("pins", "HostKeyPinned"))
    assert pinned_events == 2 and not lab.events("pins", "HostKeyTrustedOnFirstUse")

    lab.operator.kill()
    lab.kubectl("patch", "k3sc", "pins", "-n", lab.namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": None}))  # fmt: skip
    assert not (lab.get("k3sc", "pins") or {}).get("status")
    lab.operator.start()
    lab.wait_ready("pins", timeout=240)

    after = lab.get("secret", "pins-host-keys")
    assert after["data"] == before["data"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert lab.sim.counts().get(FILE_READ, 0) == reads, "no key was read again"
    assert sum(e.get("count", 1) for e in lab.events("pins", "HostKeyPinned")) == pinned_events
    assert not lab.events("pins", "HostKeyTrustedOnFirstUse")
    status_nodes = {n["name"]: n for n in lab.get("k3sc", "pins")["status"]["nodes"]}
    assert {k: n["hostKeyFingerprint"] for k, n in status_nodes.items()} == {
        k: n["hostKeyFingerprint"] for k, n in nodes.items()
    }
