"""metrics.py: what the controllers record is what a Prometheus scrape reads."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from k3s_deploy import errors, metrics


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/api2/json/nodes/pve1/qemu/100/status/start", "/nodes/{node}/qemu/{vmid}/status/start"),
        ("/nodes/pve1/qemu/100/config", "/nodes/{node}/qemu/{vmid}/config"),
        ("nodes/pve1/tasks/UPID:pve1:0001:qmclone::root@pam:/status", "/nodes/{node}/tasks/{upid}/status"),
        ("/api2/json/cluster/resources?type=vm", "/cluster/resources"),
        (
            "/nodes/qemu/qemu/7/agent/network-get-interfaces",
            "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
        ),
        ("/nodes/pve1/storage/local-lvm/content", "/nodes/{node}/storage/{storage}/content"),
        ("/version", "/version"),
    ],
)
def test_endpoint_template(path: str, template: str) -> None:
    assert metrics.endpoint_template(path) == template


def test_proxmox_calls_are_counted_by_template_and_timed() -> None:
    labels = {"endpoint": "/nodes/{node}/qemu/{vmid}/status/current", "method": "GET"}
    before_ok = value("k3sdeploy_proxmox_requests_total", result="ok", **labels)
    before_err = value("k3sdeploy_proxmox_requests_total", result="error", **labels)
    before_sum = value("k3sdeploy_proxmox_request_duration_seconds_sum", **labels)

    metrics.observe_proxmox_call("/nodes/a/qemu/1/status/current", "get", 0.25, ok=True)
    metrics.observe_proxmox_call("/nodes/b/qemu/2/status/current", "GET", 0.5, ok=True)
    with pytest.raises(RuntimeError), metrics.time_proxmox_call("/nodes/c/qemu/3/status/current", "GET"):
        raise RuntimeError("boom")

    assert value("k3sdeploy_proxmox_requests_total", result="ok", **labels) == before_ok + 2
    assert value("k3sdeploy_proxmox_requests_total", result="error", **labels) == before_err + 1
    assert value("k3sdeploy_proxmox_request_duration_seconds_sum", **labels) >= before_sum + 0.75


def test_reconcile_outcomes_by_kind_and_reason() -> None:
    kind = "ProxmoxVM"
    ok0 = value("k3sdeploy_reconcile_total", kind=kind, result="success", reason="Succeeded")
    busy0 = value("k3sdeploy_reconcile_errors_total", kind=kind, reason="ProxmoxBusy", transient="true")
    denied0 = value(
        "k3sdeploy_reconcile_errors_total", kind=kind, reason="ProxmoxPermissionDenied", transient="false"
    )
    count0 = value("k3sdeploy_reconcile_duration_seconds_count", kind=kind)

    with metrics.time_reconcile(kind):
        pass
    with pytest.raises(errors.ProxmoxBusy), metrics.time_reconcile(kind):
        raise errors.ProxmoxBusy("VM 100 is locked (clone)")
    with pytest.raises(errors.ProxmoxPermissionDenied), metrics.time_reconcile(kind):
        raise errors.ProxmoxPermissionDenied("token lacks VM.Clone on /vms/100")
    with pytest.raises(KeyError), metrics.time_reconcile(kind):
        raise KeyError("bug")

    assert value("k3sdeploy_reconcile_total", kind=kind, result="success", reason="Succeeded") == ok0 + 1
    assert value("k3sdeploy_reconcile_total", kind=kind, result="retry", reason="ProxmoxBusy") >= 1
    assert (
        value("k3sdeploy_reconcile_errors_total", kind=kind, reason="ProxmoxBusy", transient="true")
        == busy0 + 1
    )
    assert (
        value(
            "k3sdeploy_reconcile_errors_total", kind=kind, reason="ProxmoxPermissionDenied", transient="false"
        )
        == denied0 + 1
    )
    assert value("k3sdeploy_reconcile_total", kind=kind, result="error", reason="KeyError") >= 1
    assert value("k3sdeploy_reconcile_duration_seconds_count", kind=kind) == count0 + 4


def test_tasks_and_ssh() -> None:
    t0 = value("k3sdeploy_proxmox_tasks_total", type="qmclone", result="error")
    s0 = value("k3sdeploy_ssh_operations_total", operation="install_k3s", result="ok")
    metrics.observe_proxmox_task("qmclone", 12.0, ok=False)
    with metrics.time_ssh("install_k3s"):
        pass
    assert value("k3sdeploy_proxmox_tasks_total", type="qmclone", result="error") == t0 + 1
    assert value("k3sdeploy_proxmox_task_duration_seconds_bucket", type="qmclone", le="20.0") >= 1
    assert value("k3sdeploy_ssh_operations_total", operation="install_k3s", result="ok") == s0 + 1


def test_objects_by_phase_follow_moves_and_deletions() -> None:
    kind = "K3sClusterPhaseTest"
    metrics.set_object_phase(kind, "ns", "a", "Provisioning")
    metrics.set_object_phase(kind, "ns", "b", "Provisioning")
    metrics.set_object_phase(kind, "ns", "a", "Ready")
    metrics.set_object_phase(kind, "ns", "a", "Ready")  # idempotent: no double count
    assert value("k3sdeploy_objects", kind=kind, phase="Provisioning") == 1
    assert value("k3sdeploy_objects", kind=kind, phase="Ready") == 1
    metrics.forget_object(kind, "ns", "a")
    metrics.forget_object(kind, "ns", "a")
    metrics.forget_object(kind, "ns", "b")
    assert value("k3sdeploy_objects", kind=kind, phase="Ready") == 0
    assert value("k3sdeploy_objects", kind=kind, phase="Provisioning") == 0


def test_metrics_server_serves_the_registry_on_loopback() -> None:
    metrics.observe_ssh("connect", 0.1, ok=True)
    server = metrics.start_metrics_server(0)
    try:
        assert server.address == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as rsp:
            body = rsp.read().decode()
    finally:
        server.close()
    names = {family.name for family in text_string_to_metric_families(body)}
    for expected in [
        "k3sdeploy_reconcile",
        "k3sdeploy_reconcile_errors",
        "k3sdeploy_proxmox_requests",
        "k3sdeploy_proxmox_request_duration_seconds",
        "k3sdeploy_proxmox_task_duration_seconds",
        "k3sdeploy_ssh_operations",
        "k3sdeploy_objects",
        "process_cpu_seconds",
    ]:
        assert expected in names, expected
    assert 'k3sdeploy_ssh_operations_total{operation="connect",result="ok"}' in body


def test_requests_hook_records_real_http_calls() -> None:
    """The hook on a real requests session against a loopback HTTP server."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import requests

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if "/status/current" in self.path else 403
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    labels_ok = {"endpoint": "/nodes/{node}/qemu/{vmid}/status/current", "method": "GET"}
    labels_denied = {"endpoint": "/nodes/{node}/qemu/{vmid}/config", "method": "GET"}
    ok0 = value("k3sdeploy_proxmox_requests_total", result="ok", **labels_ok)
    err0 = value("k3sdeploy_proxmox_requests_total", result="error", **labels_denied)
    try:
        with requests.Session() as session:
            session.hooks["response"].append(metrics.proxmox_response_hook)
            base = f"http://127.0.0.1:{server.server_port}/api2/json"
            session.get(f"{base}/nodes/pve1/qemu/100/status/current", timeout=5)
            session.get(f"{base}/nodes/pve1/qemu/100/config", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert value("k3sdeploy_proxmox_requests_total", result="ok", **labels_ok) == ok0 + 1
    assert value("k3sdeploy_proxmox_requests_total", result="error", **labels_denied) == err0 + 1
