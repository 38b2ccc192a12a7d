"""The stable cluster identity cannot be claimed without its Secret (docs/security.md, item 4).

A K3sCluster's VMs are marked with a tag derived from a random cluster id kept in ``<cluster>-token``
(key ``clusterId``), so the same manifest and Secrets re-applied on a new management cluster find
them again. A tenant (T2) in another namespace re-applies the victim's name and spec, with a
``<cluster>-token`` Secret of its own whose id is guessed from what it can see: the ownership tag the
victim's VM carries in Proxmox. The victim's VM must not be claimed: the tenant's child clones a VM of
its own and the victim's VM is not touched.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from k3s_deploy_lab import sample_cluster

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

KEYS = ("name", "sshkeys", "ipconfig0", "tags", "description", "cores", "memory")
MANAGED = {"k3sdeploy.io/cluster": "victim", "app.kubernetes.io/managed-by": "k3s-deploy"}


@pytest.fixture
def tenants(lab: Lab) -> Iterator[list[str]]:
    """Two attacker namespaces, each with the shared Proxmox credentials the admin put there."""
    names = [lab.namespace[:55] + suffix for suffix in ("-b", "-c")]
    for name in names:
        lab.kubectl("create", "namespace", name)
        private, _ = sample_cluster.new_ssh_key()
        lab.apply(*sample_cluster.lab_secrets(lab.pve, name, private))
    try:
        yield names
    finally:
        for name in names:
            lab.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def _state(lab: Lab, vmid: int) -> dict[str, Any] | None:
    vm = lab.vms().get(vmid)
    if vm is None:
        return None
    node = lab.sim.api().nodes(vm["node"]).qemu(vmid)
    config = node.config.get()
    current = node.status.current.get()
    return {**{k: config.get(k) for k in KEYS}, "status": current["status"], "uptime": current.get("uptime")}


def _get(lab: Lab, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = lab.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def _vmid_of(lab: Lab, namespace: str, name: str, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        vmid = ((_get(lab, namespace, "pvm", name) or {}).get("status") or {}).get("vmid")
        if vmid:
            return int(vmid)
        time.sleep(0.5)
    raise AssertionError(f"{namespace}/{name} never got a VM: {_get(lab, namespace, 'pvm', name)}")


def _secret(namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "victim-token", "namespace": namespace, "labels": MANAGED},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_a_tenant_cannot_claim_another_clusters_vms_with_a_guessed_identity(
    lab: Lab, tenants: list[str], start_operator: Callable[..., Any]
) -> None:
    lab.apply(lab.cluster("victim", servers=1, agents=0))
    lab.wait_ready("victim", timeout=240)
    token = lab.get("secret", "victim-token")
    assert token is not None
    cluster_id = base64.b64decode(token["data"].get("clusterId", "")).decode()
    assert re.fullmatch(r"[0-9a-f]{32}", cluster_id), "the cluster has a stable, unguessable identity"
    vmid = int(lab.get("pvm", "victim-server-0")["status"]["vmid"])
    before = _state(lab, vmid)
    assert before is not None and before["status"] == "running"
    tag = next(t for t in str(before["tags"]).split(";") if re.fullmatch(r"k3sdeploy-[0-9a-f]{16}", t))

    lab.operator.stop()
    lab.operator = start_operator(",".join([lab.namespace, *tenants]))
    victim_uid = lab.get("k3sc", "victim")["metadata"]["uid"]
    guesses = {
        tenants[0]: tag[len("k3sdeploy-") :] + "0" * 16,  # the visible tag, padded to an id's length
        tenants[1]: victim_uid.replace("-", ""),  # the victim object's uid, should a tenant learn it
    }
    for namespace, guess in guesses.items():
        manifest = lab.cluster("victim", servers=1, agents=0)
        manifest["metadata"]["namespace"] = namespace
        lab.apply(_secret(namespace, {"clusterId": guess}), manifest)

    for namespace in tenants:
        theirs = _vmid_of(lab, namespace, "victim-server-0")
        assert theirs != vmid, f"the tenant in {namespace} claimed the victim's VM {vmid}"
        child = _get(lab, namespace, "pvm", "victim-server-0")
        assert (child["status"] or {}).get("vmid") != vmid
    after = _state(lab, vmid)
    assert after is not None, "the victim's VM was destroyed"
    changed = {k: (before[k], after[k]) for k in (*KEYS, "status") if before[k] != after[k]}
    assert not changed, f"the victim's VM was touched: {changed}"
    assert int(after["uptime"] or 0) >= int(before["uptime"] or 0), "the victim's VM was restarted"
    theirs_tags = {
        t
        for ns in tenants
        for t in str(lab.vms()[_vmid_of(lab, ns, "victim-server-0")].get("tags", "")).split(";")
    }
    assert tag not in theirs_tags, "a guessed id derived the victim's tag"
    assert tag[len("k3sdeploy-") :] not in cluster_id, "the tag seen in Proxmox reveals nothing of the id"
    assert lab.get("k3sc", "victim")["status"]["phase"] == "Ready"
