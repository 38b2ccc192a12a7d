"""The state file round-trips everything a restart needs."""

from __future__ import annotations

from pathlib import Path

from k3s_deploy_lab.pvesim import persistence
from k3s_deploy_lab.pvesim.inventory import SAMPLE, load_inventory


def test_state_round_trip(tmp_path: Path) -> None:
    state = load_inventory(SAMPLE)
    state.leases["BC:24:11:00:00:01"] = "127.1.0.2"
    state.vms[100].pending["cores"] = "4"
    path = tmp_path / "state.json"
    persistence.save(state, path)
    assert path.stat().st_mode & 0o077 == 0
    loaded = persistence.load(path)
    assert loaded == state
    assert persistence.load(tmp_path / "missing.json") is None


def test_sample_inventory_shape() -> None:
    state = load_inventory(SAMPLE)
    assert sorted(state.nodes) == ["pve1", "pve2", "pve3"]
    assert {s.id: s.shared for s in state.storages.values()} == {"local-lvm": False, "shared": True}
    templates = {
        vm.node for vm in state.vms.values() if vm.template and vm.config["tags"] == "template;ubuntu"
    }
    assert templates == {"pve1", "pve2", "pve3"}
    tagged = {vm.vmid: vm.config.get("tags") for vm in state.vms.values() if not vm.template}
    assert tagged[100] == "k3s-server;k3sdeploy-adoptable;legacy"
    assert tagged[101] == "k3s-agent;k3sdeploy-adoptable;legacy"
    assert all(vm.config["net0"].startswith("virtio=BC:24:11:") for vm in state.vms.values())
    assert state.users["root@pam"].password and state.tokens["root@pam!k3s-operator"].privsep
    assert state.timing["tasks"]["qmclone"] == 20.0
