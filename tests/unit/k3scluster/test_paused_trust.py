"""A paused cluster with node work in flight dials only members verified as a whole pass verifies them
(its own children: address and vmid), never an address or vmid read from status, which the cluster's
author can write (threat T2); and it does so in a fresh operator process too."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from k3s_deploy.services.k3scluster import node_ops
from k3s_deploy.services.k3scluster.reconcile import Deps

from .day2_world import B, World, bump, cond
from .test_day2_reconcile import ready_cluster, upgrade_to
from .test_node_ops import Clock, operation

METADATA = "169.254.169.254"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(node_ops, "_now", c)
    return c


def dialled(w: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host the operator opens an SSH session to (each fake SSH call checks its target first),
    and the metadata address wherever it asks an API server for nodes."""
    hosts: list[str] = []
    check, nodes = w.ssh._check, w.target.nodes

    def ssh_check(target: Any) -> Any:
        hosts.append(target.host)
        return check(target)

    async def target_nodes(kubeconfig: str) -> Any:
        hosts.extend(h for h in (METADATA,) if h in kubeconfig)
        return await nodes(kubeconfig)

    monkeypatch.setattr(w.ssh, "_check", ssh_check)
    monkeypatch.setattr(w.target, "nodes", target_nodes)
    return hosts


async def _paused_mid_upgrade() -> tuple[World, dict[str, Any]]:
    w, b = await ready_cluster(1, 0)
    w.ssh.hold_jobs = True
    upgrade_to(b, B)
    first = await w.pass_(b)
    assert operation(first, "demo-server-0")["kind"] == "Upgrade"  # type: ignore[index]
    b["spec"]["paused"] = True
    bump(b)
    return w, b


@pytest.mark.parametrize(("field", "forged"), [("ip", METADATA), ("vmid", 4242)])
async def test_a_paused_pass_never_dials_an_address_or_vmid_read_from_status(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, field: str, forged: Any
) -> None:
    w, b = await _paused_mid_upgrade()
    hosts = dialled(w, monkeypatch)
    real = b["status"]["nodes"][0]["ip"]
    b["status"]["nodes"][0][field] = forged
    children = copy.deepcopy(w.objects.children)
    out = await w.pass_(b)
    assert w.objects.children == children  # a paused pass changes no child
    assert METADATA not in hosts and hosts == [], hosts  # nothing dialled at all
    assert out.status["phase"] == "Paused"
    assert "demo-server-0" in cond(out, "Reconciling")["message"]
    assert "could not be verified" in cond(out, "Reconciling")["message"]
    b["status"]["nodes"][0][field] = (
        real if field == "ip" else w.objects.children[("team", "demo-server-0")]["status"]["vmid"]
    )
    w.ssh.hold_jobs = False
    done = await w.pass_(b)  # the genuine record: the node in flight is finished while paused
    assert operation(done, "demo-server-0") is None and not w.target.cordoned
    assert set(hosts) == {real}


async def test_a_fresh_operator_process_verifies_from_the_children_and_finishes_the_work(
    clock: Clock,
) -> None:
    w, b = await _paused_mid_upgrade()
    w.deps = Deps(objects=w.objects, ssh=w.ssh, target=w.target, channels=w.channels, proxmox=w.deps.proxmox)
    w.ssh.hold_jobs = False
    clock.tick(node_ops.POLL_S)
    done = await w.pass_(b)
    assert done.status["phase"] == "Paused" and done.requeue_after is None
    assert operation(done, "demo-server-0") is None and not w.target.cordoned
    assert done.status["upgrade"]["completedNodes"] == ["demo-server-0"]


async def test_a_pause_mid_reconfigure_finishes_that_node_and_starts_no_other(clock: Clock) -> None:
    """A settings rollout paused after its drain, the restart job still running: the paused passes
    carry that node to its end (job, Ready, uncordon, digest), and no other stale node is touched."""
    w, b = await ready_cluster(3, 0)
    w.ssh.hold_jobs = True
    b["spec"]["k3s"]["serverArgs"] = ["--disable=servicelb"]
    bump(b)
    first = await w.pass_(b)
    op = operation(first, "demo-server-0")
    assert op is not None and op["kind"] == "Reconfigure" and op["job"], op  # drained, the job started
    assert w.target.cordoned == {"demo-server-0"}
    b["spec"]["paused"] = True
    bump(b)
    held = await w.pass_(b)  # the job still runs: looked at again soon, nothing else done
    assert held.status["phase"] == "Paused" and held.requeue_after is not None
    assert operation(held, "demo-server-0")["kind"] == "Reconfigure"  # type: ignore[index]
    w.ssh.hold_jobs = False
    for _ in range(5):
        clock.tick(node_ops.POLL_S)
        out = await w.pass_(b)
        if out.requeue_after is None:
            break
    assert out.status["phase"] == "Paused" and out.requeue_after is None, out.status["conditions"]
    assert operation(out, "demo-server-0") is None and not w.target.cordoned
    digests = {n["name"]: n.get("configDigest") for n in out.status["nodes"]}
    assert digests["demo-server-0"] != digests["demo-server-1"]  # server 0 runs the new settings
    for _ in range(3):
        clock.tick(node_ops.POLL_S)
        await w.pass_(b)
    restarted = [ip for ip, h in w.ssh.hosts.items() if h.restarts]
    assert restarted == [w.ip("demo-server-0")] and w.of("cordon") == ["demo-server-0"]
    b["spec"]["paused"] = False
    bump(b)
    done = await w.settle(b)
    assert cond(done, "Ready")["status"] == "True"
    assert sorted(ip for ip, h in w.ssh.hosts.items() if h.restarts) == sorted(
        w.ip(f"demo-server-{i}") for i in range(3)
    )


async def test_a_paused_pass_keeps_the_status_entry_of_a_member_being_removed(clock: Clock) -> None:
    """A paused pass does not work out which members leave (that needs the whole pass): the entry of
    one being removed, with its drain record, is written back as it was, not dropped."""
    w, b = await _paused_mid_upgrade()
    leaving = copy.deepcopy(b["status"]["nodes"][0])
    leaving.update(name="demo-server-9", state="Removing", ready=False)
    leaving["operation"] = {**leaving["operation"], "kind": "Drain", "action": "Remove"}
    b["status"]["nodes"].append(leaving)
    w.ssh.hold_jobs = False
    out = await w.pass_(b)
    kept = [n for n in out.status["nodes"] if n["name"] == "demo-server-9"]
    assert kept and kept[0]["state"] == "Removing" and kept[0]["operation"]["kind"] == "Drain"
