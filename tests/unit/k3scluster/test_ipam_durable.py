"""Pool addresses live in the ProxmoxVM specs: a status wipe readdresses nothing, and clusters sharing
a pool on one credentials Secret never get the same address (also when their passes run together)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from k3s_deploy.services.k3scluster import ipam
from k3s_deploy.services.k3scluster.reconcile import Deps

from . import day2_world
from .fakes import FakeObjects
from .test_reconcile import NS, World, cluster_body


def addresses(w: World | day2_world.World, cluster: str) -> dict[str, str]:
    """Child name -> the static address its spec gives the guest (what the VM really gets)."""
    out = {}
    for (_, name), child in w.objects.children.items():
        if child["metadata"]["labels"].get("k3sdeploy.io/cluster") == cluster:
            out[name] = child["spec"]["cloudInit"]["ipConfig"]["address"]
    return out


def other_cluster(
    name: str = "other", uid: str = "99999999-0000-0000-0000-000000000000", **kw: Any
) -> dict[str, Any]:
    body = cluster_body(**kw)
    body["metadata"].update(name=name, uid=uid)
    return body


def wipe(body: dict[str, Any], w: World | day2_world.World) -> None:
    body["status"] = {}
    for child in w.objects.children.values():
        child.pop("status", None)


async def test_status_wipe_keeps_every_address() -> None:
    """Addresses out of member order (an exclusion dropped since) survive a status wipe as they are."""
    w, body = World(), cluster_body(3, 2)
    body["spec"]["network"]["ipPool"]["exclude"] = ["10.0.0.11"]
    await w.pass_(body)
    before = addresses(w, "demo")
    assert before["demo-server-1"] == "10.0.0.12/24"
    body["spec"]["network"]["ipPool"]["exclude"] = []
    wipe(body, w)
    out = await w.pass_(body)
    assert addresses(w, "demo") == before
    assert out.status["ipAllocations"] == {k: v.split("/")[0] for k, v in before.items()}
    assert not [e for e in out.events if e.reason == "VMUpdated"]


async def test_history_is_not_readdressed_after_a_status_wipe() -> None:
    """Agents first, servers scaled 1 -> 3 later, one agent removed: the order in which members were
    added is not member order, so allocating again from scratch would move nearly every VM."""
    w, b = day2_world.World(), day2_world.body(1, 2)
    assert day2_world.cond(await w.settle(b), "Ready")["status"] == "True"
    b["spec"]["servers"]["replicas"] = 3
    day2_world.bump(b)
    assert day2_world.cond(await w.settle(b), "Ready")["status"] == "True"
    b["spec"]["agents"]["replicas"] = 1
    day2_world.bump(b)
    assert day2_world.cond(await w.settle(b), "Ready")["status"] == "True"
    assert w.objects.deleted_children == ["demo-agent-1"]
    w.objects.children.pop((NS, "demo-agent-1"))  # its ProxmoxVM finished deleting
    history = addresses(w, "demo")
    assert history == {
        "demo-server-0": "10.0.0.10/24",
        "demo-agent-0": "10.0.0.11/24",
        "demo-server-1": "10.0.0.13/24",
        "demo-server-2": "10.0.0.14/24",
    }
    installs = len(w.of("install"))

    wipe(b, w)
    out = await w.settle(b)
    assert day2_world.cond(out, "Ready")["status"] == "True"
    assert addresses(w, "demo") == history
    assert out.status["ipAllocations"]["demo-server-1"] == "10.0.0.13"
    assert len(w.of("install")) == installs, "nothing is installed again"
    # a new member takes the lowest free address: the removed agent's
    b["spec"]["agents"]["replicas"] = 2
    day2_world.bump(b)
    await w.pass_(b)
    assert addresses(w, "demo")["demo-agent-1"] == "10.0.0.12/24"


async def test_a_leaving_childs_address_stays_taken_until_it_is_gone() -> None:
    w, body = World(), cluster_body(1, 2)
    await w.pass_(body)
    leaving = addresses(w, "demo")["demo-agent-1"]
    body["spec"]["agents"]["replicas"] = 1
    body["spec"]["servers"]["replicas"] = 3
    await w.pass_(body)
    assert (NS, "demo-agent-1") in w.objects.children  # not deleted yet: its VM still runs
    now = addresses(w, "demo")
    assert leaving not in (now["demo-server-1"], now["demo-server-2"])


async def test_two_clusters_on_one_pool_never_share_an_address() -> None:
    w = World()
    first, second = cluster_body(1, 2), other_cluster(servers=1, agents=2)
    await w.pass_(first)
    await w.pass_(second)
    mine, theirs = addresses(w, "demo"), addresses(w, "other")
    assert set(mine.values()) == {"10.0.0.10/24", "10.0.0.11/24", "10.0.0.12/24"}
    assert set(theirs.values()) == {"10.0.0.13/24", "10.0.0.14/24", "10.0.0.15/24"}
    # status wiped on both, and the first one scaled: still disjoint, nobody moved
    wipe(first, w)
    wipe(second, w)
    first["spec"]["agents"]["replicas"] = 3
    await w.pass_(second)
    await w.pass_(first)
    assert addresses(w, "other") == theirs
    grown = addresses(w, "demo")
    assert {k: grown[k] for k in mine} == mine and grown["demo-agent-2"] == "10.0.0.16/24"


class YieldingObjects(FakeObjects):
    """Every list and create gives the event loop a turn, as a real apiserver round trip does."""

    async def list_children(self, namespace: str, cluster: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return await super().list_children(namespace, cluster)

    async def list_namespace_vms(self, namespace: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return await super().list_namespace_vms(namespace)

    async def create_child(self, body: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return await super().create_child(body)


async def test_concurrent_passes_of_two_clusters_claim_distinct_addresses() -> None:
    w = World()
    objects = YieldingObjects()
    objects.secrets = w.objects.secrets
    w.objects = objects
    w.deps = Deps(objects=objects, ssh=w.ssh, target=w.target)  # one process: one set of claims
    first, second = cluster_body(1, 2), other_cluster(servers=1, agents=2)
    await asyncio.gather(w.pass_(first), w.pass_(second))
    mine, theirs = addresses(w, "demo"), addresses(w, "other")
    assert len(mine) == len(theirs) == 3
    assert not set(mine.values()) & set(theirs.values()), (mine, theirs)
    # deleting a cluster releases its claims
    w.deps.addresses.release(second["metadata"]["uid"])
    assert not w.deps.addresses.others((NS, "pve"), first["metadata"]["uid"])


async def test_another_secret_is_another_proxmox() -> None:
    """Only the same Secret in the same namespace is known to be the same Proxmox (docs: disjoint pools)."""
    w = World()
    w.objects.secrets[(NS, "pve-b")] = copy.deepcopy(w.objects.secrets[(NS, "pve")])
    await w.pass_(cluster_body(1, 0))
    await w.pass_(other_cluster(servers=1, agents=0, credentialsRef={"name": "pve-b"}))
    # the rule the docs state: other Secrets are not looked at, so those clusters need disjoint pools
    assert addresses(w, "demo") == {"demo-server-0": "10.0.0.10/24"}
    assert addresses(w, "other") == {"other-server-0": "10.0.0.10/24"}


def vm(
    name: str, address: str | None, *, created: str, credentials: str = "pve", ns: str = NS
) -> dict[str, Any]:
    cloud_init = {"ipConfig": {"address": address} if address else {"dhcp": True}}
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "spec": {"credentialsRef": {"name": credentials}, "cloudInit": cloud_init},
    }


def test_held_by_others_counts_same_secret_and_lets_the_elder_keep_a_shared_address() -> None:
    mine = [vm("a-server-0", "10.0.0.10/24", created="2024-01-01T00:00:00Z")]
    others = [
        vm("b-server-0", "10.0.0.11/24", created="2024-02-01T00:00:00Z"),
        vm("b-server-1", "10.0.0.10/24", created="2024-02-01T00:00:00Z"),  # younger duplicate of ours
        vm("c-server-0", "10.0.0.12/24", created="2023-01-01T00:00:00Z", credentials="elsewhere"),
        vm("d-server-0", None, created="2023-01-01T00:00:00Z"),
    ]
    assert ipam.held_by_others([*mine, *others], mine=mine, credentials="pve") == {"10.0.0.11"}
    elder = [vm("b-server-1", "10.0.0.10/24", created="2023-06-01T00:00:00Z")]
    assert ipam.held_by_others([*mine, *elder], mine=mine, credentials="pve") == {"10.0.0.10"}


async def test_a_tenant_in_another_namespace_cannot_squat_pool_addresses() -> None:
    """T2: ProxmoxVMs of another namespace naming a Secret of the same name reserve nothing here."""
    w = World()
    for i in range(10, 31):  # the whole pool, claimed from next door
        squat = vm(f"squat-{i}", f"10.0.0.{i}/24", created="2020-01-01T00:00:00Z", ns="elsewhere")
        w.objects.children[("elsewhere", f"squat-{i}")] = {
            **squat,
            "metadata": {**squat["metadata"], "labels": {}},
        }
    out = await w.pass_(cluster_body(1, 0))
    assert out.error is None or out.error.reason != "IPPoolExhausted"
    assert addresses(w, "demo") == {"demo-server-0": "10.0.0.10/24"}
