"""Growing a one-server cluster: its server is converted to embedded etcd before any server joins
(a server cannot join one on SQLite), once, without a reinstall; and back down again."""

from __future__ import annotations

from typing import Any

from k3s_deploy.services.k3scluster import etcd_convert, install

from .day2_world import World, body, bump, cond


async def ready(servers: int, agents: int = 0) -> tuple[World, dict[str, Any]]:
    w, b = World(), body(servers, agents)
    await w.pass_(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    w.ops.clear()
    w.ssh.log.clear()
    return w, b


def converted(w: World) -> list[str]:
    return [host for host, what in w.ssh.log if what == "convert"]


async def test_one_server_starts_without_etcd_and_grows_to_three_after_a_conversion_restart() -> None:
    w, b = await ready(1, 1)
    first = w.ip("demo-server-0")
    assert not w.ssh.hosts[first].etcd  # a lone server keeps SQLite
    b["spec"]["servers"]["replicas"] = 3
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and out.status["readyServers"] == 3
    assert converted(w) == [first]
    # the conversion ran before any server joined, and the first server was not reinstalled
    log = [(h, what) for h, what in w.ssh.log if what in ("convert", "install", "install-refused")]
    assert log[0] == (first, "convert")
    assert ("install", "demo-server-0") not in w.ops and w.of("convert") == ["demo-server-0"]
    assert sorted(n for op, n in w.ops if op == "install") == ["demo-server-1", "demo-server-2"]
    assert w.ssh.hosts[first].etcd


async def test_three_to_one_and_back_to_five_converts_nothing_again() -> None:
    w, b = await ready(3)
    b["spec"]["servers"]["replicas"] = 1
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and out.status["readyServers"] == 1
    assert w.objects.deleted_children == ["demo-server-2", "demo-server-1"]  # one at a time, newest first
    for key in [k for k, c in w.objects.children.items() if c["metadata"].get("deletionTimestamp")]:
        del w.ssh.hosts[w.ip(key[1])]
        del w.objects.children[key]
    b["spec"]["servers"]["replicas"] = 5
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Ready")["status"] == "True" and out.status["readyServers"] == 5
    assert converted(w) == []  # the server left runs embedded etcd already


async def test_without_the_conversion_the_join_fails_as_k3s_refuses_it(monkeypatch: Any) -> None:
    """The fake refuses what K3s refuses, so the growth test above shows the conversion is needed."""
    w, b = await ready(1)

    async def skip(*_: Any) -> None:
        return None

    monkeypatch.setattr(etcd_convert, "ensure", skip)
    b["spec"]["servers"]["replicas"] = 3
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Stalled")["reason"] == "K3sInstallFailed"
    assert "does not run embedded etcd" in cond(out, "Stalled")["message"]


def test_conversion_is_needed_only_for_a_running_anchor_without_etcd_that_others_join() -> None:
    from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView

    w, b = World(), body(3, 0)
    r = ClusterPass(b, w.deps, generation=1)
    r.views["s0"] = NodeView("s0", "server", False, server_up=True)
    join = (install.InstallStep("s1", "server", "join-server", "https://10.0.0.10:6443"),)
    plan = install.InstallPlan("s0", (), (), server_joins=join, anchor="s0")
    assert etcd_convert.needed(plan, r) == "s0"
    r.views["s0"].embedded_etcd = True
    assert etcd_convert.needed(plan, r) is None
    r.views["s0"].embedded_etcd = False
    reinstalled = install.InstallPlan(
        "s0", (), (), first=(install.InstallStep("s0", "server", "init"),), server_joins=join, anchor="s0"
    )
    assert etcd_convert.needed(reinstalled, r) is None  # the reinstall carries --cluster-init


def test_conversion_script_writes_a_drop_in_and_waits_for_etcd() -> None:
    script = etcd_convert.script()
    assert "cluster-init: true" in script and etcd_convert.DROP_IN in script
    assert "systemctl restart k3s" in script and install.EMBEDDED_ETCD_FILE in script
    assert script.index("mv -f") < script.index("systemctl restart k3s")
