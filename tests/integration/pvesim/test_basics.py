"""Read-only endpoints through proxmoxer, as the operator calls them."""

from __future__ import annotations

import pytest

from fixtures.pve import PveSim
from integration.pvesim.helpers import raw

pytestmark = pytest.mark.integration


def test_version_nodes_and_status(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    assert api.version.get()["release"] == "9.1"
    nodes = api.nodes.get()
    assert sorted(n["node"] for n in nodes) == ["pve1", "pve2", "pve3"]
    assert all(n["status"] == "online" and n["type"] == "node" and n["maxmem"] > 0 for n in nodes)
    status = api.nodes("pve2").status.get()
    assert status["cpuinfo"]["cpus"] == 16 and status["memory"]["total"] == 64 * 1024**3


def test_cluster_resources_covers_every_node_in_one_call(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.reset_counts()
    vms = api.cluster.resources.get(type="vm")
    assert pve_sim.counts() == {"GET /cluster/resources": 1}
    by_id = {v["vmid"]: v for v in vms}
    assert {v["node"] for v in vms} == {"pve1", "pve2", "pve3"}
    assert by_id[100]["id"] == "qemu/100" and by_id[100]["type"] == "qemu"
    assert by_id[100]["tags"] == "k3s-server;k3sdeploy-adoptable;legacy" and by_id[100]["status"] == "running"
    assert by_id[9001]["template"] == 1 and by_id[100]["template"] == 0
    assert by_id[9001]["tags"] == "template;ubuntu"
    assert by_id[110]["maxdisk"] == 64 * 1024**3
    kinds = {r["type"] for r in api.cluster.resources.get()}
    assert kinds == {"qemu", "node", "storage"}
    storages = api.cluster.resources.get(type="storage")
    assert {(s["node"], s["storage"]) for s in storages} >= {("pve1", "local-lvm"), ("pve3", "shared")}


def test_nextid_is_a_string_and_refuses_used_ids(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    assert api.cluster.nextid.get() == "103"
    assert api.cluster.nextid.get(vmid=500) == "500"
    resp = raw(pve_sim, "GET", "/cluster/nextid", params={"vmid": 100})
    assert resp.status_code == 400
    assert resp.json()["errors"] == {"vmid": "VM 100 already exists\n"}


def test_qemu_list_and_status_current(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    listed = {v["vmid"]: v for v in api.nodes("pve1").qemu.get()}
    assert set(listed) == {100, 110, 9000, 9001}
    assert listed[100]["status"] == "running" and listed[100]["pid"] > 0
    assert listed[110]["status"] == "stopped" and "pid" not in listed[110]
    current = api.nodes("pve1").qemu(100).status.current.get()
    assert current["qmpstatus"] == "running" and current["agent"] == 1 and current["ha"] == {"managed": 0}
    assert (
        current["name"] == "legacy-k3s-server-1"
        and current["tags"] == "k3s-server;k3sdeploy-adoptable;legacy"
    )


def test_vm_on_another_node_is_a_missing_config(pve_sim: PveSim) -> None:
    resp = raw(pve_sim, "GET", "/nodes/pve2/qemu/100/config")
    assert resp.status_code == 500
    assert resp.reason == "Configuration file 'nodes/pve2/qemu-server/100.conf' does not exist"


def test_storage_listing(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    storages = {s["storage"]: s for s in api.nodes("pve1").storage.get()}
    assert storages["shared"]["shared"] == 1 and storages["local-lvm"]["shared"] == 0
    assert (
        storages["local-lvm"]["used"] > 0 and storages["local-lvm"]["avail"] < storages["local-lvm"]["total"]
    )
    assert api.nodes("pve1").storage.get(storage="shared")[0]["storage"] == "shared"


def test_config_values_typed_and_digest(pve_sim: PveSim) -> None:
    config = pve_sim.api().nodes("pve1").qemu(9001).config.get()
    assert config["template"] == 1 and config["cores"] == 2 and config["agent"] == "1"
    assert config["net0"].startswith("virtio=BC:24:11:") and len(config["digest"]) == 40
