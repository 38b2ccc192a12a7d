"""Add-ons end to end: the operator writes them to the server's auto-deploy directory, the K3s
stand-in applies them to its real kube-apiserver; removing one removes its file and its objects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from .conftest import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

HELLO = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "hello-from-addon", "namespace": "default"},
    "data": {"greeting": "hi"},
}
ADDONS = [
    {"name": "hello", "manifests": {"configMapRef": {"name": "hello-manifests"}}},
    {
        "name": "metallb",
        "helmChart": {
            "repo": "https://metallb.github.io/metallb",
            "chart": "metallb",
            "version": "0.14.8",
            "targetNamespace": "metallb-system",
            "valuesFrom": {"configMapRef": {"name": "metallb-values", "key": "values.yaml"}},
        },
    },
]


def _config_maps(lab: Lab) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "hello-manifests", "namespace": lab.namespace},
            "data": {"manifests.yaml": yaml.safe_dump(HELLO)},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "metallb-values", "namespace": lab.namespace},
            "data": {"values.yaml": "speaker:\n  frr:\n    enabled: false\n"},
        },
    ]


def _until(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1.0)


def _guest_get(lab: Lab, *args: str) -> dict[str, Any] | None:
    proc = lab.kubectl(*args, "-o", "json", kubeconfig=lab.kubeconfig_of("addons"), check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def _json_patch(lab: Lab, ops: list[dict[str, Any]]) -> None:
    lab.kubectl("patch", "k3sc", "addons", "-n", lab.namespace, "--type=json", "-p", json.dumps(ops))


def test_addons_appear_in_the_guest_cluster_and_go_with_their_file(lab: Lab) -> None:
    lab.apply(*_config_maps(lab))
    lab.apply(lab.cluster("addons", servers=1, agents=0, extra_spec={"addons": ADDONS}))
    lab.wait_ready("addons", timeout=300)
    status = (lab.get("k3sc", "addons") or {})["status"]
    assert sorted(a["name"] for a in status["addons"]) == ["hello", "metallb"]
    ip = status["nodes"][0]["ip"]

    hello = _until(
        "the manifests add-on's ConfigMap",
        lambda: _guest_get(lab, "get", "configmap", "-n", "default", "hello-from-addon"),
    )
    assert hello["data"] == {"greeting": "hi"}
    chart = _until(
        "the HelmChart",
        lambda: _guest_get(lab, "get", "helmcharts.helm.cattle.io", "-n", "kube-system", "metallb"),
    )
    assert chart["spec"]["repo"] == "https://metallb.github.io/metallb"
    assert chart["spec"]["chart"] == "metallb" and chart["spec"]["targetNamespace"] == "metallb-system"
    assert yaml.safe_load(chart["spec"]["valuesContent"]) == {"speaker": {"frr": {"enabled": False}}}
    listing = asyncio.run(
        lab.ssh(ip, "sudo sha256sum /var/lib/rancher/k3s/server/manifests/k3s-deploy-addon-*")
    )
    digests = {
        line.split()[1].rsplit("-", 1)[1].removesuffix(".yaml"): "sha256:" + line.split()[0]
        for line in listing.splitlines()
    }
    assert digests == {a["name"]: a["digest"] for a in status["addons"]}, "status says what the server holds"

    # remove the manifests add-on: its file, then its objects, go; the chart stays
    _json_patch(lab, [{"op": "replace", "path": "/spec/addons", "value": [ADDONS[1]]}])
    _until(
        "the file to go",
        lambda: (
            "k3s-deploy-addon-hello"
            not in asyncio.run(lab.ssh(ip, "sudo ls /var/lib/rancher/k3s/server/manifests/"))
        ),
    )
    _until(
        "the ConfigMap to go",
        lambda: _guest_get(lab, "get", "configmap", "-n", "default", "hello-from-addon") is None,
    )
    assert _guest_get(lab, "get", "helmcharts.helm.cattle.io", "-n", "kube-system", "metallb") is not None
    _until(
        "status to follow",
        lambda: (
            [a["name"] for a in (lab.get("k3sc", "addons") or {})["status"].get("addons", [])] == ["metallb"]
        ),
    )
    reasons = {e["reason"] for e in lab.events("addons")}
    assert {"AddonApplied", "AddonRemoved"} <= reasons, reasons

    # a ConfigMap that is not there stalls the cluster with a reason naming it
    missing = {"name": "ghost", "manifests": {"configMapRef": {"name": "no-such-configmap"}}}
    _json_patch(lab, [{"op": "add", "path": "/spec/addons/-", "value": missing}])
    stalled = lab.wait_condition("addons", "Stalled", timeout=60)
    assert stalled["reason"] == "AddonConfigMapNotFound" and "no-such-configmap" in stalled["message"]


def test_the_apiserver_refuses_path_tricks_and_ambiguous_addons(lab: Lab) -> None:
    for addon, words in (
        ({"name": "../../etc/evil", "manifests": {"configMapRef": {"name": "x"}}}, "must be a DNS label"),
        (
            {
                "name": "both",
                "manifests": {"configMapRef": {"name": "x"}},
                "helmChart": ADDONS[1]["helmChart"],
            },
            "exactly one",
        ),
        ({"name": "neither"}, "exactly one"),
    ):
        manifest = lab.cluster("bad", servers=1, agents=0, extra_spec={"addons": [addon]})
        proc = lab.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest), check=False
        )
        assert proc.returncode != 0 and words in proc.stderr, proc.stderr


def test_the_apiserver_takes_max_unhealthy_as_int_or_percent_only(lab: Lab) -> None:
    def dry_run(value: Any) -> Any:
        spec = {"remediation": {"maxUnhealthy": value}, "teardown": "Leave"}
        manifest = lab.cluster("mhc", servers=1, agents=0, extra_spec=spec)
        return lab.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest), check=False
        )

    for good in (0, 2, "40%", "100%"):
        assert dry_run(good).returncode == 0, good
    for bad in ("abc", "101%", "40", -1):
        proc = dry_run(bad)
        assert proc.returncode != 0 and "percentage of the nodes" in proc.stderr, (bad, proc.stderr)
