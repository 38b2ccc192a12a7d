"""Fault rules: seeded error rates, limited rules, task failure matching, call counts."""

from __future__ import annotations

from k3s_deploy_lab.pvesim.faults import Counts, Faults


def test_seeded_error_rate_repeats() -> None:
    def run() -> list[bool]:
        f = Faults()
        f.update({"seed": 3, "errors": [{"match": "GET /nodes/*", "rate": 0.3}]})
        return [f.error_for("GET /nodes/{node}/qemu") is not None for _ in range(100)]

    first = run()
    assert first == run() and 10 < sum(first) < 50
    assert Faults().error_for("GET /version") is None


def test_limited_rules_and_latency() -> None:
    f = Faults()
    f.update({"errors": [{"match": "POST *clone", "status": 503, "message": "busy", "remaining": 2}],
              "latency": 0.1, "latencies": {"GET /cluster/*": 0.2}})  # fmt: skip
    key = "POST /nodes/{node}/qemu/{vmid}/clone"
    hits = [f.error_for(key) for _ in range(3)]
    assert [h.status if h else None for h in hits] == [503, 503, None]
    assert f.delay_for("GET /cluster/resources") == 0.1 + 0.2 and f.delay_for("GET /version") == 0.1


def test_task_failure_rules() -> None:
    f = Faults()
    f.update({"taskFailures": [{"type": "qmstart", "vmid": 200, "message": "boom", "remaining": 1}]})
    assert f.task_failure("qmstart", "201", "pve1") is None
    assert f.task_failure("qmstart", "200", "pve1") == "boom"
    assert f.task_failure("qmstart", "200", "pve1") is None
    assert f.to_json()["taskFailures"][0]["remaining"] == 0


def test_counts() -> None:
    c = Counts()
    c.record("GET /version", 200)
    c.record("GET /version", 500)
    assert c.to_json() == {"total": 2, "calls": {"GET /version": 2},
                           "statuses": {"GET /version 200": 1, "GET /version 500": 1}}  # fmt: skip
    c.reset()
    assert c.to_json()["total"] == 0
