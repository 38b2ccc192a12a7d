"""Moving the management cluster costs no VM (issue 17, docs/disaster-recovery.md).

Two control planes share one simulator and one set of guests: the lab's, and a second one started
with ``k3s-deploy lab up --components controlplane``. A Ready cluster runs on the first; its operator
is stopped (the management cluster is lost); the same K3sCluster manifest and its Secrets (Proxmox
credentials, SSH key, ``<cluster>-token``, ``<cluster>-host-keys``) are applied on the second, where a
fresh operator runs. It must adopt the running VMs and K3s: no clone, no install, no key pinned again,
the kubeconfig Secret written again, Ready within two resyncs of the re-apply.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_deploy_lab.operator_component import install_crds

from .conftest import Lab
from .dr_helpers import ready_since, same_place, world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RESYNC = 20.0
NAME = "mv"
KEPT_METADATA = ("name", "namespace", "labels")


@pytest.fixture
def second_plane(tmp_path: Path) -> Iterator[Path]:
    """A second management cluster: `k3s-deploy lab up --components controlplane --dir DIR --detach`."""
    directory = tmp_path / "mgmt-b"
    lab = [sys.executable, "-m", "k3s_deploy", "lab"]
    subprocess.run([*lab, "up", "--components", "controlplane", "--dir", str(directory), "--detach"],
                   check=True, timeout=300)  # fmt: skip
    try:
        yield directory / "kubeconfig"
    finally:
        subprocess.run([*lab, "down", "--dir", str(directory)], check=False, timeout=120)


def backup_secret(lab: Lab, name: str) -> dict[str, Any]:
    """A Secret as a backup keeps it: data, type, name and labels; no uid, version or ownerReferences
    (the owner's uid does not exist on the new management cluster)."""
    found = lab.get("secret", name)
    assert found is not None, f"no Secret {name}"
    meta = {k: v for k, v in found["metadata"].items() if k in KEPT_METADATA}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": found["type"],
        "metadata": meta,
        "data": found["data"],
    }


def test_moving_the_management_cluster_costs_no_vm(
    lab: Lab, second_plane: Path, start_operator: Callable[..., Any]
) -> None:
    manifest = lab.cluster(NAME, servers=1, agents=1)
    lab.apply(manifest)
    lab.wait_ready(NAME, timeout=300)
    before = world(lab, NAME)
    members = sorted(before.addresses)
    assert members == [f"{NAME}-agent-0", f"{NAME}-server-0"] and len(before.vmids) == 2
    backup = [
        backup_secret(lab, s)
        for s in ("proxmox-credentials", "k3s-ssh-key", f"{NAME}-token", f"{NAME}-host-keys")
    ]
    assert json.dumps(backup).count("clusterId") == 1
    lab.operator.stop()  # the old management cluster is gone

    kubectl_b = partial(lab.kubectl, kubeconfig=second_plane)
    install_crds(second_plane)  # what `lab up` does: apply, then wait until they are served
    kubectl_b("create", "namespace", lab.namespace)
    operator_b = start_operator(
        lab.namespace, kubeconfig=second_plane, env={"K3SD_RESYNC_SECONDS": str(int(RESYNC))}
    )

    def get_b(*args: str) -> Any:
        proc = kubectl_b("get", *args, "-n", lab.namespace, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None

    applied = time.monotonic()
    kubectl_b("apply", "-f", "-", input=yaml.safe_dump_all([*backup, manifest]))  # Secrets first
    to_ready = ready_since(lab, NAME, applied, timeout=2 * RESYNC, get=get_b)
    assert operator_b.alive

    after = world(lab, NAME, kubectl=kubectl_b)
    assert not same_place(before, after, members)
    counts = {
        "clones": after.clones - before.clones,
        "installs": sum((after.installs - before.installs).values()),
        "key reads": after.key_reads - before.key_reads,
    }
    assert counts == {"clones": 0, "installs": 0, "key reads": 0}, counts
    assert after.pins == before.pins
    kubeconfig = get_b("secret", f"{NAME}-kubeconfig")
    assert kubeconfig is not None and kubeconfig["data"].get("value"), (
        "the kubeconfig Secret is written again"
    )
    status = get_b("k3sc", NAME)["status"]
    assert {n["name"]: n["vmid"] for n in status["nodes"]} == before.vmids
    ours = sorted(vmid for vmid, vm in lab.vms().items() if str(vm.get("name", "")).startswith(f"{NAME}-"))
    assert ours == sorted(before.vmids.values()), "no second VM for any member"
    print(f"management move: Ready {to_ready:.1f} s after the re-apply; {counts}")
