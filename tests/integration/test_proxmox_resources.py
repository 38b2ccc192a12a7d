"""One ``/cluster/resources`` read gives the operator's shared list its VMs and its nodes (placement
then needs no ``GET /nodes``); a token without Sys.Audit on the nodes gets VMs only, and the caller
falls back to ``GET /nodes``."""

from __future__ import annotations

from typing import Any

import pytest

from .test_proxmoxvm_adapter import client

pytestmark = pytest.mark.integration


async def test_one_read_gives_the_same_vms_and_nodes_as_the_two_reads(pve_sim: Any) -> None:
    pve = client(pve_sim)
    vms, nodes = await pve.cluster_resources()
    assert sorted(vms, key=lambda v: v.vmid) == sorted(await pve.cluster_vms(), key=lambda v: v.vmid)
    assert {(n.node, n.status, n.maxmem) for n in nodes} == {
        (n.node, n.status, n.maxmem) for n in await pve.nodes()
    }
    assert nodes and all(n.status == "online" for n in nodes)
    pve.close()
