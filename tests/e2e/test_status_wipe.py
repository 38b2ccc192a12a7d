"""Status is a cache (issue 17): every K3sCluster and ProxmoxVM status wiped, and the operator
restarted, at four points of one cluster's life (during clones, mid-join, when Ready, mid-upgrade).

The cluster has an IP pool and a history a naive re-allocation would get wrong: one server and two
agents first, servers grown 1 -> 3 afterwards (so servers hold higher addresses than agents), then one
agent removed (a hole). Each time: no VM readdressed, nothing installed twice, no extra clone, no key
pinned again, and Ready again within one resync (for the mid-work points: once the work left is done).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest

from k3s_deploy_lab.sample_cluster import node_template

from .conftest import Lab
from .dr_helpers import clones, explain, installs, ready_since, same_place, until, wipe_statuses, world
from .growth_helpers import patch, settled

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

RESYNC = 20.0
A, B = "v1.31.4+k3s1", "v1.32.0+k3s1"
NAME = "wipe"


def _pool(lab: Lab) -> dict[str, Any]:
    """Addresses at the top of this simulator's leased block (its DHCP leases start at the bottom)."""
    net = ipaddress.ip_network(lab.sim.dhcp_range)
    hosts = list(net.hosts())
    return {
        "ipPool": {"start": str(hosts[-24]), "end": str(hosts[-2]), "prefixLength": net.prefixlen},
        "gateway": str(hosts[0]),
    }


def _count(c: dict[str, Any], servers: int, agents: int) -> bool:
    s = c["status"]
    return (s.get("readyServers"), s.get("readyAgents"), len(s.get("nodes") or [])) == (
        servers,
        agents,
        servers + agents,
    )


def _restart_wiped(lab: Lab) -> float:
    """Kill the operator, wipe every status, start it again; returns when it is live (monotonic)."""
    lab.operator.kill()
    wipe_statuses(lab, NAME)
    lab.operator.start()
    return time.monotonic()


def test_status_wiped_at_four_points_costs_nothing(lab: Lab) -> None:
    lab.operator.env["K3SD_RESYNC_SECONDS"] = str(int(RESYNC))
    lab.operator.restart()
    lab.apply(lab.cluster(NAME, servers=1, agents=2, extra_spec={"network": _pool(lab)}))
    settled(lab, NAME, lambda c: _count(c, 1, 2), timeout=300)
    patch(lab, NAME, {"servers": {"replicas": 3}})
    settled(lab, NAME, lambda c: _count(c, 3, 2), timeout=420)
    patch(lab, NAME, {"agents": {"replicas": 1}})
    settled(lab, NAME, lambda c: _count(c, 3, 1), timeout=240)
    until(lambda: lab.get("pvm", f"{NAME}-agent-1") is None, 120, "agent-1 gone")
    base = world(lab, NAME)
    members = sorted(base.addresses)
    assert members == [f"{NAME}-agent-0", *(f"{NAME}-server-{i}" for i in range(3))]
    # the history shows in the addresses: servers 1 and 2 came after both agents
    order = sorted(members, key=lambda m: ipaddress.ip_interface(base.addresses[m]).ip)
    assert order.index(f"{NAME}-agent-0") < order.index(f"{NAME}-server-1"), base.addresses
    figures: dict[str, float] = {}

    # 1. when Ready
    live = _restart_wiped(lab)
    figures["ready"] = ready_since(lab, NAME, live, timeout=RESYNC)
    after = world(lab, NAME)
    assert not same_place(base, after, members)
    assert after.clones == base.clones and after.installs == base.installs
    assert after.pins_version == base.pins_version and after.key_reads == base.key_reads

    # 2. during the clone of a new agent, then 3. mid-join of that agent
    # A new member in an agent pool (a new name): re-adding agent-1 would meet its stale pin when the
    # new VM gets the old vmid back (HostKeyChanged), a limit of the pin store that is not this test's.
    new = f"{NAME}-extra-0"

    def joins() -> int:
        return sum(
            int(e.get("count") or 1) for e in lab.events(NAME, "Installing") if f"on {new} " in e["message"]
        )

    joined_before = joins()
    lab.sim.set_timing(scale=0.1)  # a clone takes seconds, not a fraction of one
    pool = {"name": "extra", "replicas": 1, "template": node_template(lab.public_key, user="ubuntu")}
    patch(lab, NAME, {"agentPools": [pool]})
    until(lambda: clones(lab) > base.clones, 60, "the new agent's clone to start")
    live = _restart_wiped(lab)
    lab.sim.set_timing(scale=0.01)
    until(lambda: joins() > joined_before, 240, "the new agent's join", explain=lambda: explain(lab, NAME))
    live_join = _restart_wiped(lab)
    figures["join"] = ready_since(lab, NAME, live_join, timeout=300)
    figures["clone+join"] = figures["join"] + (live_join - live)
    settled(lab, NAME, lambda c: _count(c, 3, 2), timeout=120)
    grown = world(lab, NAME)
    assert not same_place(base, grown, members)
    assert grown.clones == base.clones + 1, "one clone: the new agent's"
    assert grown.installs - base.installs == {(new, A): 1}, grown.installs - base.installs
    assert all(grown.pins.get(k) == v for k, v in base.pins.items())
    members.append(new)

    # 4. mid-upgrade
    patch(lab, NAME, {"k3s": {"version": B}})
    until(lambda: any(v == B for _, v in installs(lab)), 240, "the first node upgraded")
    live = _restart_wiped(lab)
    figures["upgrade"] = ready_since(lab, NAME, live, timeout=420)
    settled(lab, NAME, lambda c: all(n.get("k3sVersion") == B for n in c["status"]["nodes"]), timeout=120)
    upgraded = world(lab, NAME)
    assert not same_place(grown, upgraded, members)
    assert upgraded.clones == grown.clones
    assert upgraded.installs - grown.installs == {(m, B): 1 for m in members}, (
        upgraded.installs - grown.installs
    )
    assert upgraded.pins_version == grown.pins_version and upgraded.key_reads == grown.key_reads
    print(f"status-wipe figures (s from the restarted operator being live to Ready): {figures}")
