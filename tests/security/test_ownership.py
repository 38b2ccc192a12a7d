"""Ownership cannot be forged (docs/security.md, item 4), against the real apiserver and the lab.

A tenant (T2) in namespace B copies everything it can see of a victim's VM in namespace A: the child's
labels (``k3sdeploy.io/cluster``, ``k3sdeploy.io/cluster-uid``), its ownerReferences, its spec and the
VM's name. It must not reclaim, re-key, reconfigure, stop or destroy A's VM. Adopting a VM needs a
marker an admin set in Proxmox (tag ``k3sdeploy-adoptable``), and so does destroying an adopted VM.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from k3s_deploy_lab import sample_cluster

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ADOPTABLE = "k3sdeploy-adoptable"
STATE_KEYS = ("name", "cores", "memory", "sshkeys", "ciuser", "ipconfig0", "tags", "description")


@pytest.fixture
def tenant_b(lab: Lab) -> Iterator[str]:
    """The attacker's namespace; the admin put the shared Proxmox credentials Secret there too."""
    name = lab.namespace[:55] + "-b"
    lab.kubectl("create", "namespace", name)
    private, _ = sample_cluster.new_ssh_key()
    lab.apply(*sample_cluster.lab_secrets(lab.pve, name, private))
    try:
        yield name
    finally:
        lab.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def _vm_state(lab: Lab, vmid: int) -> dict[str, Any] | None:
    """What Proxmox says of the VM (config with pending values, power state, uptime), None if gone."""
    vm = lab.vms().get(vmid)
    if vm is None:
        return None
    api = lab.sim.api()
    config = api.nodes(vm["node"]).qemu(vmid).config.get()
    current = api.nodes(vm["node"]).qemu(vmid).status.current.get()
    state = {key: config.get(key) for key in STATE_KEYS}
    return {**state, "status": current["status"], "uptime": int(current.get("uptime") or 0)}


def _get(lab: Lab, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = lab.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def _settled(lab: Lab, namespace: str, name: str, timeout: float = 45.0) -> dict[str, Any] | None:
    """The ProxmoxVM once a pass has judged it: Ready or Stalled (or what it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    obj = None
    while time.monotonic() < deadline:
        obj = _get(lab, namespace, "pvm", name)
        if (
            _condition(obj, "Ready").get("status") == "True"
            or _condition(obj, "Stalled").get("status") == "True"
        ):
            return obj
        time.sleep(0.5)
    return obj


def _pvm_events(lab: Lab, namespace: str, name: str) -> list[dict[str, Any]]:
    proc = lab.kubectl("get", "events", "-n", namespace, "-o", "json")
    items = json.loads(proc.stdout).get("items", [])
    return [
        e
        for e in items
        if e["involvedObject"].get("kind") == "ProxmoxVM" and e["involvedObject"].get("name") == name
    ]


def _compare(before: dict[str, Any], after: dict[str, Any] | None, when: str) -> list[str]:
    """Every way the victim's VM was touched, as readable findings."""
    if after is None:
        return [f"{when}: the victim's VM was destroyed"]
    found = [
        f"{when}: {key} changed {before[key]!r} -> {after[key]!r}"
        for key in (*STATE_KEYS, "status")
        if before[key] != after[key]
    ]
    if after["uptime"] < before["uptime"]:
        found.append(
            f"{when}: the victim's VM was restarted (uptime {before['uptime']} -> {after['uptime']})"
        )
    return found


def test_tenant_cannot_take_another_namespace_vm(
    lab: Lab, tenant_b: str, start_operator: Callable[..., Any]
) -> None:
    # The victim: a K3sCluster in namespace A, Ready, with one cloned server.
    lab.apply(lab.cluster("victim", servers=1, agents=0))
    lab.wait_ready("victim", timeout=240)
    child = lab.get("pvm", "victim-server-0")
    vmid = int(child["status"]["vmid"])
    before = _vm_state(lab, vmid)
    assert before is not None and before["status"] == "running"
    # One operator watches both tenants (the cluster-wide install).
    lab.operator.stop()
    lab.operator = start_operator(f"{lab.namespace},{tenant_b}")

    _, attacker_key = sample_cluster.new_ssh_key()
    meta = child["metadata"]
    forged_spec = copy.deepcopy(child["spec"])
    forged_spec["cloudInit"]["sshAuthorizedKeys"] = [attacker_key]
    forged_spec["resources"]["cores"] = 4
    forged_spec["deletionPolicy"] = "Delete"
    pvm = {"apiVersion": "k3sdeploy.io/v1alpha1", "kind": "ProxmoxVM"}
    # 1. The victim's child, copied whole: same name, labels (cluster-uid too) and ownerReferences.
    forged = {
        **pvm,
        "metadata": {
            "name": meta["name"],
            "namespace": tenant_b,
            "labels": dict(meta["labels"]),
            "ownerReferences": copy.deepcopy(meta["ownerReferences"]),
        },
        "spec": forged_spec,
    }
    # 2. Labels only (no ownerReference), another object name, the victim's VM name in spec.name.
    lookalike = {
        **pvm,
        "metadata": {"name": "lookalike", "namespace": tenant_b, "labels": dict(meta["labels"])},
        "spec": {**copy.deepcopy(forged_spec), "name": before["name"]},
    }
    # 3. Adopt the victim's VM by vmid, to stop it and destroy it on delete.
    grab = {
        **pvm,
        "metadata": {"name": "grab", "namespace": tenant_b},
        "spec": {
            "credentialsRef": {"name": "proxmox-credentials"},
            "source": {"existing": {"vmid": vmid}},
            "cloudInit": {"sshAuthorizedKeys": [attacker_key]},
            "powerState": "Stopped",
            "deletionPolicy": "Delete",
        },
    }
    lab.apply(forged, lookalike, grab)
    judged = {name: _settled(lab, tenant_b, name) for name in (meta["name"], "lookalike", "grab")}
    time.sleep(8)  # a few more resyncs (3 s in tests) for anything that takes a second look
    findings = _compare(before, _vm_state(lab, vmid), "after the copies were applied")

    for name in (meta["name"], "lookalike"):
        lab.kubectl(
            "patch", "pvm", name, "-n", tenant_b, "--type=merge", "-p", '{"spec":{"powerState":"Stopped"}}'
        )
    time.sleep(10)
    findings += _compare(before, _vm_state(lab, vmid), "after powerState: Stopped")

    lab.kubectl(
        "delete", "pvm", meta["name"], "lookalike", "grab", "-n", tenant_b, "--timeout=90s", check=False
    )
    time.sleep(2)
    findings += _compare(
        before, _vm_state(lab, vmid), "after the copies were deleted (deletionPolicy Delete)"
    )
    assert not findings, "tenant B reached tenant A's VM:\n" + "\n".join(findings)

    # Each copy was refused with a reason that says why (or got a VM of its own).
    forged_seen = judged[meta["name"]]
    stalled = _condition(forged_seen, "Stalled")
    assert stalled.get("reason") == "OwnerNotVerified", forged_seen
    assert "victim" in stalled["message"] and tenant_b in stalled["message"]
    assert ((forged_seen or {}).get("status") or {}).get("vmid") is None
    grab_stalled = _condition(judged["grab"], "Stalled")
    assert grab_stalled.get("reason") == "AdoptionNotAllowed", judged["grab"]
    assert ADOPTABLE in grab_stalled["message"]
    own = ((judged["lookalike"] or {}).get("status") or {}).get("vmid")
    assert own is not None and own != vmid, "the lookalike clones a VM of its own, not the victim's"
    assert own not in lab.vms(), "deletionPolicy Delete destroyed the lookalike's own VM"
    # The victim noticed nothing.
    assert _condition(lab.get("pvm", "victim-server-0"), "Ready").get("status") == "True"
    assert _condition(lab.get("k3sc", "victim"), "Ready").get("status") == "True"


def _tags(lab: Lab, node: str, vmid: int) -> str:
    return str(lab.sim.api().nodes(node).qemu(vmid).config.get().get("tags", ""))


def _set_tags(lab: Lab, node: str, vmid: int, tags: str) -> None:
    lab.sim.api().nodes(node).qemu(vmid).config.put(tags=tags)


def test_adoption_and_destruction_need_the_admin_marker(lab: Lab, wait_for: Callable[..., Any]) -> None:
    ns = lab.namespace
    adopt = {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {"name": "billing", "namespace": ns},
        "spec": {
            "credentialsRef": {"name": "proxmox-credentials"},
            "source": {"existing": {"vmid": 110}},
            "powerState": "Stopped",
            "tags": ["adopted"],
        },
    }
    before = _vm_state(lab, 110)
    assert before is not None and ADOPTABLE not in str(before["tags"])
    lab.apply(adopt)
    seen = _settled(lab, ns, "billing")
    stalled = _condition(seen, "Stalled")
    assert stalled.get("reason") == "AdoptionNotAllowed", seen
    assert ADOPTABLE in stalled["message"] and "110" in stalled["message"]
    assert _condition(seen, "Ready").get("status") == "False"
    assert ((seen or {}).get("status") or {}).get("vmid") is None
    assert _vm_state(lab, 110) == before, "an unmarked VM is not touched"
    assert any(e["reason"] == "AdoptionNotAllowed" for e in _pvm_events(lab, ns, "billing"))

    # The admin marks it: the same object adopts it at the next pass.
    _set_tags(lab, "pve1", 110, f"{before['tags']};{ADOPTABLE}")
    wait_for(
        lambda: _condition(_get(lab, ns, "pvm", "billing"), "Ready").get("status") == "True",
        timeout=60,
        what="billing to be adopted once marked",
    )
    assert "adopted" in _tags(lab, "pve1", 110)

    # deletionPolicy Delete on an adopted VM needs the marker at delete time: removed -> retained.
    tags_102 = _tags(lab, "pve3", 102)
    assert ADOPTABLE in tags_102, "the sample inventory marks the legacy VMs adoptable"
    doomed = copy.deepcopy(adopt)
    doomed["metadata"]["name"] = "legacy-2"
    doomed["spec"].update(source={"existing": {"vmid": 102}}, deletionPolicy="Delete")
    lab.apply(doomed)
    wait_for(
        lambda: _condition(_get(lab, ns, "pvm", "legacy-2"), "Ready").get("status") == "True",
        timeout=60,
        what="legacy-2 to be adopted",
    )
    _set_tags(lab, "pve3", 102, ";".join(t for t in _tags(lab, "pve3", 102).split(";") if t != ADOPTABLE))
    lab.kubectl("delete", "pvm", "legacy-2", "-n", ns, "--timeout=60s")
    assert 102 in lab.vms(), "an adopted VM without the marker is retained, whatever deletionPolicy says"
    reasons = {e["reason"]: e["message"] for e in _pvm_events(lab, ns, "legacy-2")}
    assert "AdoptionNotAllowed" in reasons and ADOPTABLE in reasons["AdoptionNotAllowed"], reasons

    # With the marker in place, Delete does destroy the adopted VM.
    lab.kubectl(
        "patch", "pvm", "billing", "-n", ns, "--type=merge", "-p", '{"spec":{"deletionPolicy":"Delete"}}'
    )
    lab.sim.api().nodes("pve1").qemu(110).config.put(protection=0)
    lab.kubectl("delete", "pvm", "billing", "-n", ns, "--timeout=60s")
    assert 110 not in lab.vms(), "a marked adopted VM is destroyed under deletionPolicy Delete"
