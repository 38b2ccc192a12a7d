from __future__ import annotations

import pytest

from k3s_deploy import errors
from k3s_deploy.ports.proxmox import VmSummary
from k3s_deploy.services.k3scluster import discovery
from k3s_deploy.services.k3scluster.topology import (
    LABEL_CLUSTER,
    LABEL_ROLE,
    ClusterRef,
    child_manifest,
    cloned_members,
    owned_by,
    ownership_tag,
)

CLUSTER = ClusterRef("demo", "ns1", "3F2A9C10-1111-2222-3333-444455556666")
COMMON = {"credentialsRef": {"name": "pve"}}
TEMPLATE = {
    "source": {"clone": {"template": {"name": "debian-12"}}},
    "tags": ["k3s"],
    "resources": {"cores": 2},
}


def test_ownership_tag_is_a_lowercase_uid_prefix() -> None:
    assert ownership_tag(CLUSTER.uid) == "k3sdeploy-3f2a9c1011112222"


def test_cloned_members_names_specs_and_tags() -> None:
    members = cloned_members(
        CLUSTER,
        servers=3,
        agents=2,
        server_template=TEMPLATE,
        agent_template={**TEMPLATE, "resources": {"cores": 4}},
        common=COMMON,
    )
    assert [m.name for m in members] == [
        "demo-server-0",
        "demo-server-1",
        "demo-server-2",
        "demo-agent-0",
        "demo-agent-1",
    ]
    assert [m.role for m in members].count("server") == 3
    server, agent = members[0], members[3]
    assert server.vm_spec["credentialsRef"] == {"name": "pve"}
    assert server.vm_spec["tags"] == ["k3s", "k3sdeploy-3f2a9c1011112222"]
    assert agent.vm_spec["resources"] == {"cores": 4}
    assert TEMPLATE["tags"] == ["k3s"], "templates must not be mutated"
    assert not server.adopted


def test_child_manifest_labels_owner_and_network() -> None:
    member = cloned_members(
        CLUSTER, servers=1, agents=0, server_template=TEMPLATE, agent_template={}, common=COMMON
    )[0]
    body = child_manifest(
        CLUSTER,
        member,
        ip_config={"address": "10.0.0.10/24", "gateway": "10.0.0.1"},
        dns={"nameservers": ["10.0.0.53"], "searchDomain": "lab", "ignored": None},
    )
    meta = body["metadata"]
    assert body["kind"] == "ProxmoxVM" and body["apiVersion"] == "k3sdeploy.io/v1alpha1"
    assert meta["name"] == "demo-server-0" and meta["namespace"] == "ns1"
    assert meta["labels"] == {
        LABEL_CLUSTER: "demo",
        LABEL_ROLE: "server",
        "k3sdeploy.io/cluster-uid": CLUSTER.uid,
    }
    ref = meta["ownerReferences"][0]
    assert ref["uid"] == CLUSTER.uid and ref["controller"] is True and ref["kind"] == "K3sCluster"
    assert body["spec"]["cloudInit"] == {
        "interface": 0,
        "ipConfig": {"address": "10.0.0.10/24", "gateway": "10.0.0.1"},
        "nameservers": ["10.0.0.53"],
        "searchDomain": "lab",
    }
    assert owned_by(body, CLUSTER)
    assert not owned_by(body, ClusterRef("other", "ns1", "x"))


def test_discovery_by_locations() -> None:
    members = discovery.by_locations(
        "demo", {"server": ["pve1/101"], "agent": ["pve2/201", "pve1/202"]}, common=COMMON
    )
    assert [(m.name, m.role, m.vm_spec["node"]) for m in members] == [
        ("demo-server-101", "server", "pve1"),
        ("demo-agent-201", "agent", "pve2"),
        ("demo-agent-202", "agent", "pve1"),
    ]
    assert all(m.adopted for m in members)
    assert members[0].vm_spec["source"] == {"existing": {"vmid": 101}}
    assert members[0].vm_spec["deletionPolicy"] == "Retain"


@pytest.mark.parametrize("bad", [["pve1-101"], ["pve1/abc"], ["/101"]])
def test_discovery_rejects_malformed_locations(bad: list[str]) -> None:
    with pytest.raises(errors.InvalidSpec):
        discovery.by_locations("demo", {"server": bad}, common=COMMON)


def test_discovery_rejects_a_vm_listed_twice() -> None:
    with pytest.raises(errors.InvalidSpec, match="listed twice"):
        discovery.by_locations("demo", {"server": ["pve1/101"], "agent": ["pve2/101"]}, common=COMMON)


def test_discovery_by_tags() -> None:
    vms = [
        VmSummary(vmid=110, node="pve1", name="a1", tags=frozenset({"k3s-agent", "prod"})),
        VmSummary(vmid=101, node="pve1", name="s1", tags=frozenset({"k3s-server", "prod"})),
        VmSummary(vmid=102, node="pve2", name="s2", tags=frozenset({"k3s-server"})),
        VmSummary(vmid=900, node="pve1", name="tpl", tags=frozenset({"k3s-server", "prod"}), template=True),
    ]
    members = discovery.by_tags(
        "demo",
        vms,
        {"server": ["k3s-server", "prod"], "agent": ["k3s-agent"]},
        common=COMMON,
        deletion_policy="Stop",
    )
    assert [(m.name, m.role, m.vm_spec["node"]) for m in members] == [
        ("demo-server-101", "server", "pve1"),
        ("demo-agent-110", "agent", "pve1"),
    ]
    assert members[1].vm_spec["deletionPolicy"] == "Stop"


def test_discovery_tags_must_be_disjoint() -> None:
    vms = [VmSummary(vmid=101, node="pve1", tags=frozenset({"k3s"}))]
    with pytest.raises(errors.InvalidSpec, match="both"):
        discovery.by_tags("demo", vms, {"server": ["k3s"], "agent": ["k3s"]}, common=COMMON)
