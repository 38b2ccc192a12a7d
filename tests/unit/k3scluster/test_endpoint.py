"""spec.endpoint and spec.kubeVip in a pass: joins and the kubeconfig Secret go through the endpoint,
kube-vip's manifest reaches every server before its K3s starts, joins wait for the endpoint to answer."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from k3s_deploy.api.endpoint import KUBE_VIP_IMAGE
from k3s_deploy.api.k3scluster import KubeVip
from k3s_deploy.services.k3scluster import endpoint, install, kubevip, node_config

from .test_reconcile import NS, World, cluster_body, cond

VIP = "10.0.0.200"


@pytest.fixture(autouse=True)
def _fresh_process() -> None:
    """Each test is a fresh operator process: nothing placed yet."""
    endpoint._placed.clear()


def _manifest_docs(script: str) -> list[dict[str, Any]]:
    body = script.split("<<'K3S_DEPLOY_KUBE_VIP'\n", 1)[1].split("\nK3S_DEPLOY_KUBE_VIP\n", 1)[0]
    return [d for d in yaml.safe_load_all(body) if d]


async def test_joins_agents_and_kubeconfig_use_the_endpoint_and_kube_vip_is_placed_first() -> None:
    w, body = World(), cluster_body(3, 1, endpoint=VIP, kubeVip={"interface": "ens18"})
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert out.error is None and cond(out, "Ready")["status"] == "True", out.status["conditions"]
    servers = ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    for ip in servers:
        host = w.ssh.hosts[ip]
        # the manifest went there before K3s was installed
        first_manifest = w.ssh.log.index((ip, "kube-vip"))
        assert first_manifest < w.ssh.log.index((ip, "install")), w.ssh.log
        assert len(host.manifests) == 1 and kubevip.MANIFEST_PATH in host.manifests[0]
        assert VIP in yaml.safe_load(host.files[node_config.CONFIG_FILE])["tls-san"]
    # the joiners' URL is in their join file (K3s's command line would win over it: none there)
    for ip in [*servers[1:], "10.0.0.13"]:
        host = w.ssh.hosts[ip]
        assert yaml.safe_load(host.files[node_config.JOIN_FILE]) == {"server": f"https://{VIP}:6443"}
        assert "--server" not in host.scripts[0] and "K3S_URL" not in host.scripts[0]
    assert node_config.JOIN_FILE not in w.ssh.hosts[servers[0]].files  # the init server joins nothing
    assert not w.ssh.hosts["10.0.0.13"].manifests  # agents carry no auto-deploy manifests
    # the endpoint was seen answering (from the init server) before anything joined through it
    checks = [i for i, (host, what) in enumerate(w.ssh.log) if what.startswith("curl ")]
    assert checks and w.ssh.log[checks[0]][0] == "10.0.0.10"
    assert checks[0] < w.ssh.log.index(("10.0.0.11", "install"))
    assert w.ssh.log[checks[0]][1] == f"curl https://{VIP}:6443/ping"
    kubeconfig = yaml.safe_load(w.objects.secrets[(NS, "demo-kubeconfig")]["data"]["value"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{VIP}:6443"
    assert out.status["serverURL"] == f"https://{VIP}:6443"
    # the DaemonSet as written: ARP, control plane, leader election on the VIP, pinned image
    docs = _manifest_docs(w.ssh.hosts["10.0.0.10"].manifests[0])
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]
    container = docs[-1]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["address"] == VIP and env["vip_interface"] == "ens18"
    assert env["vip_arp"] == env["cp_enable"] == env["vip_leaderelection"] == "true"
    assert container["image"] == KUBE_VIP_IMAGE and docs[-1]["spec"]["template"]["spec"]["hostNetwork"]


async def test_joins_wait_until_the_endpoint_answers() -> None:
    w, body = World(), cluster_body(3, 1, endpoint="k3s.example.internal:443")
    await w.pass_(body)
    w.boot()
    w.ssh.endpoint_code = "000"
    out = await w.pass_(body)
    assert w.ssh.installs() == ["10.0.0.10"]  # the first server only
    assert cond(out, "Reconciling")["reason"] == "WaitingForEndpoint"
    assert "k3s.example.internal:443" in cond(out, "Reconciling")["message"]
    assert out.requeue_after is not None and out.error is None
    assert not any(h.manifests for h in w.ssh.hosts.values())  # no kubeVip: nothing placed
    w.ssh.endpoint_code = "200"
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    join = yaml.safe_load(w.ssh.hosts["10.0.0.11"].files[node_config.JOIN_FILE])
    assert join == {"server": "https://k3s.example.internal:443"}
    config = yaml.safe_load(w.ssh.hosts["10.0.0.10"].files[node_config.CONFIG_FILE])
    assert config["tls-san"] == ["k3s.example.internal"]


async def test_kube_vip_unset_on_day_two_removes_the_manifest() -> None:
    w, body = World(), cluster_body(1, 0, endpoint=VIP, kubeVip={})
    await w.pass_(body)
    w.boot()
    assert cond(await w.pass_(body), "Ready")["status"] == "True"
    del body["spec"]["kubeVip"]
    body["metadata"]["generation"] = 2
    await w.pass_(body)
    host = w.ssh.hosts["10.0.0.10"]
    assert len(host.manifests) == 2 and host.manifests[-1].startswith("rm -f ")


async def test_kube_vip_unset_after_an_operator_restart_still_removes_the_manifest() -> None:
    """What is on the server is read by the probe, not remembered by the process that placed it."""
    w, body = World(), cluster_body(1, 0, endpoint=VIP, kubeVip={})
    await w.pass_(body)
    w.boot()
    assert cond(await w.pass_(body), "Ready")["status"] == "True"
    endpoint._placed.clear()  # a new operator process remembers nothing
    del body["spec"]["kubeVip"]
    body["metadata"]["generation"] = 2
    await w.pass_(body)
    host = w.ssh.hosts["10.0.0.10"]
    assert len(host.manifests) == 2 and host.manifests[-1].startswith("rm -f ")
    await w.pass_(body)
    assert len(host.manifests) == 2  # gone now: the probe finds nothing, nothing more is run


def test_the_plan_without_endpoint_joins_the_anchor() -> None:
    facts = [install.NodeFacts("s0", "server", "10.0.0.10"), install.NodeFacts("s1", "server", "10.0.0.11")]
    plain = install.plan(facts, install.K3sSettings(version="v1.31.4+k3s1"), init_server=None)
    assert plain.server_joins[0].join_url == "https://10.0.0.10:6443"
    fronted = install.plan(
        facts, install.K3sSettings(version="v1.31.4+k3s1", endpoint="lb.example:443"), init_server=None
    )
    assert fronted.server_joins[0].join_url == "https://lb.example:443"
    assert install.tls_sans(install.K3sSettings(endpoint="lb.example:443"), ["10.0.0.10"]) == [
        "10.0.0.10",
        "lb.example",
    ]


def test_manifest_without_interface_lets_kube_vip_pick() -> None:
    text = kubevip.manifest(KubeVip(image="registry.internal/kube-vip:v0.8.9"), "10.0.0.5:6443")
    docs = list(yaml.safe_load_all(text))
    env = {e["name"]: e.get("value") for e in docs[-1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "vip_interface" not in env and env["address"] == "10.0.0.5" and env["port"] == "6443"
