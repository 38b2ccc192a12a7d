"""The K3sCluster reconcile pass against in-memory fakes of its ports."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from k3s_deploy import errors
from k3s_deploy.services.cluster_identity import identity_tag
from k3s_deploy.services.k3scluster import node_config
from k3s_deploy.services.k3scluster.reconcile import Deps, Outcome, reconcile
from k3s_deploy.services.k3scluster.teardown import teardown

from .fakes import PVE_SECRET, FakeAgents, FakeHost, FakeObjects, FakeSsh, FakeTarget, fingerprint_of

NS = "team"
V = "v1.31.4+k3s1"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n"


def cluster_body(servers: int = 3, agents: int = 2, **spec_over: Any) -> dict[str, Any]:
    template = {"clone": {"template": {"name": "debian-12"}}, "cloudInit": {"user": "root"}}
    spec: dict[str, Any] = {
        "credentialsRef": {"name": "pve"},
        "k3s": {"version": V, "serverArgs": ["--disable=traefik"]},
        "ssh": {"privateKeySecretRef": {"name": "ssh", "key": "ssh-privatekey"}},
        "servers": {"replicas": servers, "template": template},
        "agents": {"replicas": agents, "template": template},
        "network": {
            "ipPool": {"start": "10.0.0.10", "end": "10.0.0.30", "prefixLength": 24},
            "gateway": "10.0.0.1",
            "nameservers": ["10.0.0.53"],
        },
    }
    spec.update(spec_over)
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "K3sCluster",
        "metadata": {
            "name": "demo",
            "namespace": NS,
            "uid": "abcdef12-0000-0000-0000-000000000000",
            "generation": 1,
        },
        "spec": spec,
    }


class World:
    def __init__(self) -> None:
        self.objects = FakeObjects()
        self.ssh = FakeSsh()
        self.target = FakeTarget(self.ssh)
        self.agents = FakeAgents(self.objects, self.ssh)
        self.deps = Deps(
            objects=self.objects,
            ssh=self.ssh,
            target=self.target,
            proxmox=lambda _credentials: self.agents,  # type: ignore[arg-type,return-value]
        )
        self.objects.secrets[(NS, "pve")] = copy.deepcopy(PVE_SECRET)
        self.objects.secrets[(NS, "ssh")] = {
            "data": {"ssh-privatekey": KEY.encode()},
            "labels": {},
            "owner": None,
        }

    def boot(self) -> None:
        self.objects.boot_all()
        for (_, _), child in self.objects.children.items():
            ip = child["status"]["addresses"][0]
            self.ssh.hosts.setdefault(ip, FakeHost(host_key=f"SHA256:key-of-{ip}", authorized_key=KEY))

    async def pass_(self, body: dict[str, Any]) -> Outcome:
        outcome = await reconcile(body, self.deps, generation=body["metadata"]["generation"])
        body["status"] = copy.deepcopy(outcome.status)
        return outcome


def cond(outcome: Outcome, type_: str) -> dict[str, Any]:
    return next(c for c in outcome.status["conditions"] if c["type"] == type_)


async def test_fresh_3_plus_2_cluster_becomes_ready() -> None:
    w, body = World(), cluster_body()
    first = await w.pass_(body)
    assert sorted(n for _, n in w.objects.children) == [
        "demo-agent-0",
        "demo-agent-1",
        "demo-server-0",
        "demo-server-1",
        "demo-server-2",
    ]
    assert first.requeue_after and cond(first, "VMsReady")["status"] == "False"
    assert cond(first, "Reconciling")["reason"] == "WaitingForVMs"
    assert cond(first, "Ready")["status"] != "True"
    assert first.status["ipAllocations"]["demo-server-0"] == "10.0.0.10"
    child = w.objects.children[(NS, "demo-server-0")]
    assert child["spec"]["cloudInit"]["ipConfig"] == {"address": "10.0.0.10/24", "gateway": "10.0.0.1"}
    assert child["spec"]["cloudInit"]["nameservers"] == ["10.0.0.53"]
    cluster_id = w.objects.secrets[(NS, "demo-token")]["data"]["clusterId"].decode()
    assert identity_tag(cluster_id) in child["spec"]["tags"]  # the stable id's tag, not the uid's
    assert [e.reason for e in first.events].count("VMCreated") == 5

    w.boot()
    second = await w.pass_(body)
    assert second.error is None and second.requeue_after is None, second.status["conditions"]
    # init first, then the other servers one by one, then the agents
    assert w.ssh.installs() == ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"] or (
        w.ssh.installs()[:3] == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
        and sorted(w.ssh.installs()[3:]) == ["10.0.0.13", "10.0.0.14"]
    )
    init_script = w.ssh.hosts["10.0.0.10"].scripts[0]
    assert "--cluster-init" in init_script and "traefik" not in init_script
    # serverArgs are K3s config keys in a config.yaml.d file written before the installer ran
    config = yaml.safe_load(w.ssh.hosts["10.0.0.10"].files[node_config.CONFIG_FILE])
    assert config == {"disable": ["traefik"]}
    assert w.ssh.hosts["10.0.0.10"].modes[node_config.CONFIG_FILE] == 0o600
    join = w.ssh.hosts["10.0.0.11"].scripts[0]
    assert "--server" not in join and "--cluster-init" not in join  # the URL is in the join file
    joined = w.ssh.hosts["10.0.0.11"].files[node_config.JOIN_FILE]
    assert yaml.safe_load(joined) == {"server": "https://10.0.0.10:6443"}
    for ip in ("10.0.0.10", "10.0.0.11", "10.0.0.12"):
        assert "--tls-san" not in w.ssh.hosts[ip].scripts[0]  # K3s adds each server's own address
    agent = w.ssh.hosts["10.0.0.13"].scripts[0]
    assert "K3S_URL" not in agent
    joined = w.ssh.hosts["10.0.0.13"].files[node_config.JOIN_FILE]
    assert yaml.safe_load(joined) == {"server": "https://10.0.0.10:6443"}
    secret = w.objects.secrets[(NS, "demo-token")]["data"]
    token, agent_token = secret["token"].decode(), secret["agentToken"].decode()
    password = token.rsplit(":", 1)[1]
    # the first server starts with the password, the others join with the secure token (CA pinned),
    # agents with the agent token only
    assert token.startswith("K10" + "ab" * 32 + "::server:")
    assert f"export K3S_TOKEN={password}\n" in init_script and f"K3S_AGENT_TOKEN={agent_token}" in init_script
    assert f"export K3S_TOKEN={token}\n" in join
    assert f"export K3S_TOKEN=K10{'ab' * 32}::node:{agent_token}\n" in agent and password not in agent

    st = second.status
    assert cond(second, "Ready")["status"] == "True"
    assert "Reconciling" not in {c["type"] for c in st["conditions"]}
    assert (st["readyServers"], st["readyAgents"], st["initServer"]) == (3, 2, "demo-server-0")
    assert st["k3sVersion"] == V and st["phase"] == "Ready" and st["serverURL"] == "https://10.0.0.10:6443"
    node = next(n for n in st["nodes"] if n["name"] == "demo-agent-1")
    assert (
        node["hostKeyFingerprint"] == fingerprint_of("SHA256:key-of-10.0.0.14")
        and node["ready"]
        and node["vmid"]
    )
    kubeconfig = yaml.safe_load(w.objects.secrets[(NS, "demo-kubeconfig")]["data"]["value"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://10.0.0.10:6443"
    assert kubeconfig["current-context"] == "demo"
    # the init server was recorded before any install ran
    assert w.objects.status_patches[0]["initServer"] == "demo-server-0"
    assert token not in repr(st) and all(token not in e.message for e in second.events)

    # idempotence: nothing is installed again
    before = len(w.ssh.installs())
    third = await w.pass_(body)
    assert len(w.ssh.installs()) == before
    assert cond(third, "Ready")["status"] == "True"
    assert cond(third, "Ready")["lastTransitionTime"] == cond(second, "Ready")["lastTransitionTime"]


async def test_single_server_without_cluster_init_and_user_endpoint() -> None:
    w, body = World(), cluster_body(1, 0, endpoint="k3s.example.com")
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    script = w.ssh.hosts["10.0.0.10"].scripts[0]
    config = yaml.safe_load(w.ssh.hosts["10.0.0.10"].files[node_config.CONFIG_FILE])
    assert "--cluster-init" not in script and config["tls-san"] == ["k3s.example.com"]
    kubeconfig = yaml.safe_load(w.objects.secrets[(NS, "demo-kubeconfig")]["data"]["value"])
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://k3s.example.com:6443"
    # the operator itself checks health through a server address
    assert "https://10.0.0.10:6443" in w.target.kubeconfigs[-1]
    assert cond(out, "AgentsReady")["status"] == "True"


async def test_changed_host_key_stalls_once_without_event_storm() -> None:
    w, body = World(), cluster_body(1, 1)
    await w.pass_(body)
    w.boot()
    await w.pass_(body)
    w.ssh.hosts["10.0.0.11"].host_key = "SHA256:evil"
    out = await w.pass_(body)
    stalled = cond(out, "Stalled")
    assert stalled["reason"] == "HostKeyChanged" and "demo-agent-0" in stalled["message"]
    assert cond(out, "Ready")["status"] == "False"
    assert out.status["phase"] == "Stalled" and out.requeue_after is None
    assert [e.reason for e in out.events if e.type == "Warning"] == ["HostKeyChanged"]
    again = await w.pass_(body)
    assert [e for e in again.events if e.type == "Warning"] == []
    # relaxing the policy accepts and re-pins the new key, with a warning
    body["spec"]["ssh"]["hostKeyPolicy"] = "AcceptChanged"
    relaxed = await w.pass_(body)
    assert cond(relaxed, "Ready")["status"] == "True"
    assert any(e.reason == "HostKeyChanged" and e.type == "Warning" for e in relaxed.events)
    agent = next(n for n in relaxed.status["nodes"] if n["name"] == "demo-agent-0")
    assert agent["hostKeyFingerprint"] == fingerprint_of("SHA256:evil")


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("no-ssh-secret", "SecretNotFound"),
        ("wrong-key", "SshAuthFailed"),
        ("bad-install", "K3sInstallFailed"),
        ("user-token-missing", "SecretNotFound"),
    ],
)
async def test_bad_inputs_stall_with_reason(breakage: str, reason: str) -> None:
    w, body = World(), cluster_body(1, 0)
    await w.pass_(body)
    w.boot()
    if breakage == "no-ssh-secret":
        del w.objects.secrets[(NS, "ssh")]
    elif breakage == "wrong-key":
        w.ssh.hosts["10.0.0.10"].authorized_key = "another key"
    elif breakage == "bad-install":
        w.ssh.hosts["10.0.0.10"].fail_install = "[ERROR] Download failed: no such version"
    else:
        body["spec"]["k3s"]["tokenSecretRef"] = {"name": "mine", "key": "token"}
    out = await w.pass_(body)
    assert cond(out, "Stalled")["reason"] == reason
    assert cond(out, "Ready")["status"] == "False"
    assert out.error is not None and not out.error.transient
    assert any(e.type == "Warning" and e.reason == reason for e in out.events)


async def test_unreachable_node_is_transient() -> None:
    w, body = World(), cluster_body(1, 0)
    await w.pass_(body)
    w.boot()
    w.ssh.hosts["10.0.0.10"].reachable = False
    out = await w.pass_(body)
    assert out.error is not None and out.error.transient
    assert "Stalled" not in {c["type"] for c in out.status["conditions"]}
    assert cond(out, "Reconciling")["reason"] == "SshUnavailable"
    assert out.status["nodes"][0]["state"] == "Unreachable"


async def test_pool_exhausted_stalls_before_creating_vms() -> None:
    w, body = World(), cluster_body(3, 2)
    body["spec"]["network"]["ipPool"] = {"start": "10.0.0.10", "end": "10.0.0.12", "prefixLength": 24}
    out = await w.pass_(body)
    assert cond(out, "Stalled")["reason"] == "IPPoolExhausted"
    assert w.objects.children == {}


async def test_rebuilt_init_server_joins_instead_of_reinitialising() -> None:
    w, body = World(), cluster_body(3, 0)
    await w.pass_(body)
    w.boot()
    await w.pass_(body)
    init = w.ssh.hosts["10.0.0.10"]
    init.version, init.kubeconfig, init.host_key = None, None, "SHA256:rebuilt"
    w.objects.children[(NS, "demo-server-0")]["status"]["vmid"] = 999  # a new VM behind the same node
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    rejoin = init.scripts[-1]
    assert "--cluster-init" not in rejoin and "--server https://10.0.0.11:6443" in rejoin
    assert out.status["initServer"] == "demo-server-0"


async def test_paused_does_nothing() -> None:
    w, body = World(), cluster_body(1, 0, paused=True)
    out = await w.pass_(body)
    assert w.objects.children == {} and out.status["phase"] == "Paused"


async def test_discovery_by_locations_adopts_with_retain() -> None:
    w = World()
    body = cluster_body()
    del body["spec"]["servers"], body["spec"]["agents"], body["spec"]["network"]
    body["spec"]["discovery"] = {"locations": {"servers": ["pve1/101"], "agents": ["pve1/102"]}}
    await w.pass_(body)
    child = w.objects.children[(NS, "demo-server-101")]
    assert child["spec"]["source"] == {"existing": {"vmid": 101}}
    assert child["spec"]["deletionPolicy"] == "Retain" and "cloudInit" not in child["spec"]
    w.boot()
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    assert all(n["adopted"] for n in out.status["nodes"])


async def test_teardown_deletes_children_then_our_secrets_only() -> None:
    w, body = World(), cluster_body(1, 1)
    await w.pass_(body)
    w.boot()
    await w.pass_(body)
    w.objects.secrets[(NS, "unrelated")] = {"data": {}, "labels": {}, "owner": None}
    with pytest.raises(errors.NotYet):
        await teardown(w.objects, body)
    assert sorted(w.objects.deleted_children) == ["demo-agent-0", "demo-server-0"]
    assert (NS, "demo-kubeconfig") in w.objects.secrets  # not before the VMs are gone
    w.objects.children.clear()
    removed = await teardown(w.objects, body)
    assert removed == ["Secret demo-kubeconfig", "Secret demo-token", "Secret demo-host-keys"]
    assert set(w.objects.secrets) == {(NS, "ssh"), (NS, "pve"), (NS, "unrelated")}


async def test_failed_server_install_is_retried_before_agents_join() -> None:
    w, body = World(), cluster_body(1, 1)
    await w.pass_(body)
    w.boot()
    server = w.ssh.hosts["10.0.0.10"]
    server.fail_install, server.half_install = "kube-apiserver exited (code 1)", True
    failed = await w.pass_(body)
    assert cond(failed, "Stalled")["reason"] == "K3sInstallFailed"
    assert next(n for n in failed.status["nodes"] if n["name"] == "demo-server-0")["state"] == "InstallFailed"
    assert w.ssh.installs() == ["10.0.0.10"], "agents must not join a server that did not come up"
    server.fail_install = None
    healed = await w.pass_(body)
    assert cond(healed, "Ready")["status"] == "True", healed.status["conditions"]
    assert w.ssh.installs() == ["10.0.0.10", "10.0.0.10", "10.0.0.11"]


async def test_server_binary_without_running_k3s_is_reinstalled() -> None:
    w, body = World(), cluster_body(1, 0)
    await w.pass_(body)
    w.boot()
    w.ssh.hosts["10.0.0.10"].version = "v1.31.4+k3s1"  # left behind by an earlier attempt
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True"
    assert w.ssh.installs() == ["10.0.0.10"]


async def test_agents_join_while_servers_join_one_at_a_time() -> None:
    w, body = World(), cluster_body(3, 2)
    await w.pass_(body)
    w.boot()
    w.ssh.install_seconds = 0.05
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    log = [(h, what) for h, what in w.ssh.log if what in ("install", "installed")]
    s0, s1, s2, a0, a1 = "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"
    assert log[:2] == [(s0, "install"), (s0, "installed")], "the init server comes first, alone"
    # never two servers installing at once
    running: set[str] = set()
    for host, what in log:
        if what == "install":
            running.add(host)
            assert len(running & {s0, s1, s2}) <= 1, log
        else:
            running.discard(host)
    # agents did not wait for the last server join
    assert log.index((a0, "install")) < log.index((s2, "installed"))
    assert log.index((a1, "install")) < log.index((s2, "installed"))
