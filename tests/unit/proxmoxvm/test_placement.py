"""Placement of new clones: spread (or packed) over the allowed nodes, counting the siblings."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import Any

import pytest

from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.ports.proxmox import NodeSummary
from k3s_deploy.services.conditions import Conditions
from k3s_deploy.services.k3scluster import spread
from k3s_deploy.services.proxmoxvm.inventory import Sessions
from k3s_deploy.services.proxmoxvm.placement import choose_node
from k3s_deploy.services.proxmoxvm.reconcile import reconcile
from k3s_deploy.services.proxmoxvm.work import Memory

from .driver import SECRET, body
from .fake import GIB, FakeConnector, FakeKube, FakeProxmox

NODES = [
    NodeSummary("pve1", "online", mem=2 * GIB, maxmem=16 * GIB),
    NodeSummary("pve2", "online", mem=1 * GIB, maxmem=16 * GIB),
    NodeSummary("pve3", "online", mem=4 * GIB, maxmem=16 * GIB),
]


def place_all(count: int, mode: str = "Spread") -> list[str]:
    placed: list[str] = []
    for _ in range(count):
        placed.append(choose_node(NODES, placed, mode=mode).node)  # type: ignore[arg-type]
    return placed


def test_three_servers_over_three_nodes_get_a_node_each() -> None:
    assert place_all(3) == ["pve2", "pve1", "pve3"]  # fewest siblings, then most free memory


def test_five_over_three_nodes_stay_balanced_and_say_why() -> None:
    placed = place_all(5)
    assert sorted(Counter(placed).values()) == [1, 2, 2]
    fourth = choose_node(NODES, placed[:3], mode="Spread")
    assert fourth.shortfall is not None and fourth.shortfall[0] == "NotEnoughNodes"
    assert "allowedNodes" in fourth.shortfall[1]
    assert choose_node(NODES, placed[:2], mode="Spread").shortfall is None


def test_pack_keeps_siblings_together() -> None:
    assert place_all(3, "Pack") == ["pve2", "pve2", "pve2"]
    assert choose_node(NODES, ["pve3"], mode="Pack").node == "pve3"  # next to the sibling, not most free
    assert choose_node(NODES, ["pve3"], mode="Pack").shortfall is None


def test_the_choice_does_not_depend_on_list_order() -> None:
    same = [NodeSummary(n, "online", mem=0, maxmem=GIB) for n in ("pve3", "pve1", "pve2")]
    assert choose_node(same, [], mode="Spread").node == "pve1"
    assert choose_node(list(reversed(same)), [], mode="Spread").node == "pve1"


# --- through the ProxmoxVM pass: siblings placed at the same moment -------------------------------


class World:
    """Siblings of one cluster and role sharing one operator process (one Sessions, one fake PVE)."""

    def __init__(self, *, local_template: bool = False) -> None:
        self.pve = FakeProxmox()
        self.pve.nodes_["pve3"] = NodeSummary("pve3", "online", mem=4 * GIB, maxmem=16 * GIB)
        self.pve.add_vm(9000, "pve1", template=True, name="tpl")
        if local_template:
            self.pve.storages = {"local-lvm": False}
        self.kube = FakeKube()
        self.kube.secrets[("ns", "pve")] = dict(SECRET)
        self.kube.list_delay = True  # the listing yields, so passes started together interleave
        self.sessions = Sessions(FakeConnector(self.pve), max_age=0.0)
        self.memories: dict[str, Memory] = {}

    def add(self, name: str, role: str = "server", **spec: Any) -> dict[str, Any]:
        obj = body(
            {
                "source": {"clone": {"template": {"name": "tpl"}}},
                "allowedNodes": ["pve1", "pve2", "pve3"],
                **spec,
            },
            name=name,
            uid=f"uid-{name}",
        )
        obj["metadata"]["labels"] = {"k3sdeploy.io/cluster": "c", "k3sdeploy.io/role": role}
        self.kube.objects[("proxmoxvms", "ns", name)] = obj
        return obj

    async def once(self, obj: dict[str, Any]) -> None:
        async def checkpoint(status: dict[str, Any]) -> None:
            obj["status"] = copy.deepcopy(status)

        out = await reconcile(
            ProxmoxVM.model_validate(obj),
            kube=self.kube,
            sessions=self.sessions,
            memory=self.memories.setdefault(obj["metadata"]["uid"], Memory()),
            checkpoint=checkpoint,
        )
        obj["status"] = out.status
        obj.setdefault("events", []).extend(out.events)

    def node_of(self, obj: dict[str, Any]) -> str:
        return self.pve.vms[obj["status"]["vmid"]].node


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == type_), None)


async def test_siblings_placed_at_the_same_time_each_get_their_own_node() -> None:
    world = World()
    servers = [world.add(f"s{i}") for i in range(3)]
    await asyncio.gather(*(world.once(s) for s in servers))
    assert sorted(world.node_of(s) for s in servers) == ["pve1", "pve2", "pve3"]
    for s in servers:
        spread_cond = condition(s, "Spread")
        assert spread_cond is not None and spread_cond["status"] == "True"


async def test_roles_spread_independently_and_pack_is_honoured() -> None:
    world = World()
    servers = [world.add(f"s{i}") for i in range(3)]
    agents = [world.add(f"a{i}", role="agent", placement="Pack") for i in range(2)]
    await asyncio.gather(*(world.once(o) for o in [*servers, *agents]))
    assert len({world.node_of(s) for s in servers}) == 3
    assert len({world.node_of(a) for a in agents}) == 1


async def test_a_placed_vm_never_moves_and_a_new_one_avoids_it() -> None:
    world = World()
    first = world.add("s0")
    await world.once(first)
    home = world.node_of(first)
    # the node with most free memory now is another one; the placed VM stays and is counted
    world.pve.nodes_[home] = NodeSummary(home, "online", mem=0, maxmem=64 * GIB)
    world.sessions = Sessions(FakeConnector(world.pve), max_age=0.0)  # a restarted operator
    second = world.add("s1")
    await world.once(first)
    await world.once(second)
    assert world.node_of(first) == home
    assert world.node_of(second) != home


async def test_an_unfinished_clone_keeps_its_recorded_node() -> None:
    world = World()
    obj = world.add("s0")
    obj["status"] = {"vmid": 321, "node": "pve3"}  # recorded before a crash; the clone never started
    await world.once(obj)
    assert world.node_of(obj) == "pve3"


async def test_template_on_local_storage_cannot_spread_and_says_so() -> None:
    world = World(local_template=True)
    servers = [world.add(f"s{i}") for i in range(3)]
    await asyncio.gather(*(world.once(s) for s in servers))
    assert {world.node_of(s) for s in servers} == {"pve1"}  # the only node the template reaches
    reasons = {(condition(s, "Spread") or {}).get("reason") for s in servers}
    assert "TemplateOnLocalStorage" in reasons
    events = [e for s in servers for e in s.get("events", []) if e.reason == "TemplateOnLocalStorage"]
    assert events and "shared storage" in events[0].message


@pytest.mark.parametrize("count", [3, 5])
async def test_cluster_condition_sums_up_its_children(count: int) -> None:
    world = World()
    servers = [world.add(f"s{i}") for i in range(count)]
    await asyncio.gather(*(world.once(s) for s in servers))
    conditions = Conditions([], generation=1)
    posted: list[tuple[str, str, str]] = []
    spread.report(conditions, servers, lambda *e: posted.append(e))
    got = conditions.get("Spread")
    assert got is not None
    if count == 3:
        assert (got["status"], posted) == ("True", [])
    else:
        assert (got["status"], got["reason"]) == ("False", "NotEnoughNodes")
        assert [p[1] for p in posted] == ["NotEnoughNodes"]
        spread.report(conditions, servers, lambda *e: posted.append(e))
        assert len(posted) == 1  # the Event is posted when the condition turns False, not every pass
