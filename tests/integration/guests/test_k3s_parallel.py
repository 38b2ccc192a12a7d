"""New clusters start side by side in the K3s stand-in (k3s/prestart.py), as first servers on
separate machines do; joins to one cluster still go one at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from fixtures.guests import Kubectl, LabGuest, lab_net, nodes, pointed_at, ready
from k3s_deploy_lab.guests.k3s.cluster import LabCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
NET = lab_net()
V1 = "v1.31.4+k3s1"

StartGuest = Callable[..., Awaitable[LabGuest]]


async def test_two_first_servers_start_their_control_planes_at_the_same_time(
    start_guest: StartGuest, host_kubectl: Kubectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans: list[tuple[float, float]] = []
    original = LabCluster.start

    async def timed(self: LabCluster) -> None:
        began = time.monotonic()
        await original(self)
        spans.append((began, time.monotonic()))

    monkeypatch.setattr(LabCluster, "start", timed)
    one = await start_guest(341, f"{NET}41", name="par-a")
    two = await start_guest(342, f"{NET}42", name="par-b")
    env = f"INSTALL_K3S_VERSION={V1}"
    results = await asyncio.gather(one.install_k3s("server", env=env), two.install_k3s("server", env=env))
    assert all(r.exit_status == 0 for r in results), [r.stderr for r in results]
    assert len(spans) == 2
    (_, a_end), (b_start, _) = sorted(spans)
    assert b_start < a_end  # the second began while the first was still starting: no lock between them
    for guest, ip in ((one, f"{NET}41"), (two, f"{NET}42")):
        k3s_yaml = await guest.read("/etc/rancher/k3s/k3s.yaml")
        listed = await nodes(host_kubectl, pointed_at(k3s_yaml, ip))
        assert len(listed) == 1 and ready(next(iter(listed.values()))) == "True"
