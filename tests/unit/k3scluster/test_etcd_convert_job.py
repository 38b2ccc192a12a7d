"""The SQLite -> embedded etcd conversion as recorded node work: a pass starts the restart as a
detached guest job and returns; later passes look at it; a pause, an operator restart or a lost
status never runs it twice, and the joins wait for it."""

from __future__ import annotations

import time
from typing import Any

from k3s_deploy.services.k3scluster import etcd_convert, node_ops

from .day2_world import World, bump, cond
from .test_server_growth import ready


def convert_starts(w: World) -> list[str]:
    return [job for _host, job in w.ssh.job_starts if job.startswith("convert-")]


def anchor(out: Any) -> dict[str, Any]:
    return next(n for n in out.status["nodes"] if n["name"] == "demo-server-0")


async def converting(w: World, b: dict[str, Any]) -> Any:
    """Grow 1 -> 3 with the conversion job held running on the guest; the first pass after it."""
    w.ssh.hold_jobs = True
    b["spec"]["servers"]["replicas"] = 3
    bump(b)
    for _ in range(5):
        w.boot()
        out = await w.pass_(b)
        if convert_starts(w):
            return out
    raise AssertionError("the conversion never started")


async def test_a_pass_during_the_conversion_returns_at_once_with_a_requeue() -> None:
    w, b = await ready(1)
    out = await converting(w, b)
    assert 0 < (out.requeue_after or 0) <= node_ops.POLL_S and out.error is None
    op = anchor(out)["operation"]
    assert (op["kind"], op["action"], op["job"]) == (
        "Convert",
        "Convert",
        etcd_convert.job_of("demo-server-0"),
    )
    assert anchor(out)["state"] == "Converting"
    assert cond(out, "Reconciling")["reason"] == "ConvertingToEmbeddedEtcd"
    began = time.perf_counter()
    again = await w.pass_(b)  # the job still runs: one look, then the pass ends
    assert time.perf_counter() - began < 1.0 and 0 < (again.requeue_after or 0) <= node_ops.POLL_S
    assert convert_starts(w) == [etcd_convert.job_of("demo-server-0")]
    assert not [n for op_, n in w.ops if op_ == "install"]  # nobody joins before etcd answers
    w.ssh.hold_jobs = False
    done = await w.settle(b)
    assert cond(done, "Ready")["status"] == "True" and done.status["readyServers"] == 3
    assert anchor(done).get("operation") is None
    assert len(convert_starts(w)) == 1 and w.of("convert") == ["demo-server-0"]


async def test_a_pause_during_the_conversion_is_seen_on_the_next_pass() -> None:
    w, b = await ready(1)
    await converting(w, b)
    b["spec"]["paused"] = True
    bump(b)
    out = await w.pass_(b)
    assert out.status["phase"] == "Paused" and out.requeue_after is None
    assert anchor(out)["operation"]["kind"] == "Convert"  # the record stays for the resume
    assert not [n for op_, n in w.ops if op_ == "install"]
    w.ssh.hold_jobs = False  # the job ends on the guest while the cluster is paused
    b["spec"]["paused"] = False
    bump(b)
    done = await w.settle(b)
    assert cond(done, "Ready")["status"] == "True" and done.status["readyServers"] == 3
    assert len(convert_starts(w)) == 1 and w.of("convert") == ["demo-server-0"]


async def test_an_operator_killed_mid_conversion_resumes_without_a_second_conversion() -> None:
    w, b = await ready(1)
    await converting(w, b)
    w2 = World()  # a new operator process: same guests and objects, nothing in memory
    w2.ssh, w2.objects = w.ssh, w.objects
    w2.deps = w.deps
    out = await w2.pass_(b)
    assert 0 < (out.requeue_after or 0) <= node_ops.POLL_S
    await _ends_ready_after_one_conversion(w, b, operator=w2)


async def test_a_status_wipe_mid_conversion_finds_the_job_and_runs_it_once() -> None:
    w, b = await ready(1)
    await converting(w, b)
    for node in b["status"]["nodes"]:
        node.pop("operation", None)  # the record is lost; the job on the guest is not
    out = await w.pass_(b)
    assert 0 < (out.requeue_after or 0) <= node_ops.POLL_S and anchor(out)["operation"]["kind"] == "Convert"
    assert not [n for op_, n in w.ops if op_ == "install"]
    await _ends_ready_after_one_conversion(w, b)


async def test_after_a_status_wipe_a_converted_server_is_read_back_from_the_node() -> None:
    w, b = await ready(1)
    b["spec"]["servers"]["replicas"] = 3
    bump(b)
    assert cond(await w.settle(b), "Ready")["status"] == "True"
    del b["status"]
    b["spec"]["servers"]["replicas"] = 5
    bump(b)
    done = await w.settle(b)
    assert cond(done, "Ready")["status"] == "True" and done.status["readyServers"] == 5
    assert len(convert_starts(w)) == 1 and w.of("convert") == ["demo-server-0"]


async def test_a_failed_conversion_stalls_naming_the_node_and_is_not_recorded_as_running() -> None:
    w, b = await ready(1)
    real = w.ssh.run

    async def failing(target: Any, command: str, **kw: Any) -> Any:
        if command == "sh -s" and "cluster-init: true" in (kw.get("input") or ""):
            return w.ssh.hosts[target.host].result(1, "", "embedded etcd did not come up after the restart")
        return await real(target, command, **kw)

    w.ssh.run = failing  # type: ignore[method-assign]
    b["spec"]["servers"]["replicas"] = 3
    bump(b)
    out = await w.settle(b)
    assert cond(out, "Stalled")["reason"] == "K3sInstallFailed"
    assert "demo-server-0" in cond(out, "Stalled")["message"]
    assert "did not come up" in cond(out, "Stalled")["message"]
    assert anchor(out).get("operation") is None


async def _ends_ready_after_one_conversion(
    w: World, b: dict[str, Any], operator: World | None = None
) -> None:
    """The held job ends on the guest; the cluster settles Ready with 3 servers, converted once."""
    w.ssh.hold_jobs = False
    done = await (operator or w).settle(b)
    assert cond(done, "Ready")["status"] == "True" and done.status["readyServers"] == 3
    assert len(convert_starts(w)) == 1 and w.of("convert") == ["demo-server-0"]
