"""Day-2 operations end to end: the operator process against the lab (control plane, Proxmox
simulator, guests with the K3s stand-in). Every check reads the truth from the management cluster,
the simulator, or the workload cluster's own API.

Run only the quick one with ``-k smoke``; the rollout scenario is the long one (about a minute).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fixtures.pve import pve_json
from k3s_deploy_lab.controlplane.processes import free_port
from k3s_deploy_lab.operator_component import kubectl_path
from k3s_deploy_lab.sample_cluster import cluster_manifest, lab_secrets, new_ssh_key

pytestmark = pytest.mark.e2e

A, B = "v1.31.4+k3s1", "v1.32.0+k3s1"
BROKEN = "v1.35.0+k3s1"  # a version the lab's installer cannot download
READY_TIMEOUT = 240.0


class Lab:
    """One namespace with the lab's Secrets, an operator process, and helpers to read state."""

    def __init__(self, kubectl: Any, namespace: str, pve: dict[str, Any], guests: Any, operator: Any) -> None:
        self.kubectl = kubectl
        self.ns = namespace
        self.pve = pve
        self.guests = guests
        self.operator = operator
        self.installs: list[str] = []  # "server|agent <node> <version>" as the stand-in saw them
        self._workload: Path | None = None
        control = guests.k3s
        original = control.log

        def log(message: str) -> None:
            parts = message.split()
            if len(parts) >= 4 and parts[0] == "k3s" and parts[1] in ("server", "agent"):
                self.installs.append(f"{parts[1]} {parts[2]} {parts[4]}")
            original(message)

        control.log = log

    async def run(self, *args: str, input: str | None = None, kubeconfig: Path | None = None) -> str:
        proc: subprocess.CompletedProcess[str] = await asyncio.to_thread(
            self.kubectl, *args, input=input, kubeconfig=kubeconfig
        )
        return proc.stdout

    async def get(self, *args: str) -> Any:
        proc = await asyncio.to_thread(self.kubectl, "get", *args, "-n", self.ns, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    async def apply(self, *objects: dict[str, Any]) -> None:
        await self.run("apply", "-n", self.ns, "-f", "-", input=yaml.safe_dump_all(list(objects)))

    async def patch(self, name: str, patch: dict[str, Any]) -> None:
        await self.run("patch", "k3sc", name, "-n", self.ns, "--type", "merge", "-p", json.dumps(patch))

    async def cluster(self, name: str) -> dict[str, Any]:
        return await self.get("k3sc", name) or {}

    async def wait(
        self, check: Callable[[], Awaitable[Any]], what: str, within: float = READY_TIMEOUT
    ) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.5)
        raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")

    async def ready(
        self, name: str, *, generation: bool = True, within: float = READY_TIMEOUT
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            obj = await self.cluster(name)
            st = obj.get("status") or {}
            if generation and st.get("observedGeneration") != obj["metadata"]["generation"]:
                return None
            return obj if condition(obj, "Ready").get("status") == "True" else None

        found: dict[str, Any] = await self.wait(check, f"K3sCluster {name} Ready", within)
        return found

    async def workload(self, name: str) -> Path:
        if self._workload is None:
            secret = await self.get("secret", f"{name}-kubeconfig")
            path = Path(tempfile.mkdtemp(prefix="day2-")) / "kubeconfig"
            path.write_bytes(base64.b64decode(secret["data"]["value"]))
            self._workload = path
        return self._workload

    async def nodes(self, name: str) -> dict[str, dict[str, Any]]:
        """Nodes of the workload cluster, from its own API."""
        out = await self.run("get", "nodes", "-o", "json", kubeconfig=await self.workload(name))
        return {n["metadata"]["name"]: n for n in json.loads(out)["items"]}

    def manifest(self, name: str, servers: int, agents: int, **spec: Any) -> dict[str, Any]:
        manifest = cluster_manifest(
            self.pve, self.public_key, name=name, namespace=self.ns, servers=servers, agents=agents
        )
        manifest["spec"].update(spec)
        return manifest

    public_key = ""
    metrics_url = ""

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The operator's /metrics, parsed: (name, labels) -> value."""

        def scrape() -> str:
            with urllib.request.urlopen(self.metrics_url, timeout=10) as rsp:  # noqa: S310 - loopback http
                return str(rsp.read().decode())

        out = {}
        for family in text_string_to_metric_families(await asyncio.to_thread(scrape)):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def kubelet(node: dict[str, Any]) -> str:
    return str(node["status"]["nodeInfo"]["kubeletVersion"])


def node_ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])


@pytest.fixture
async def lab(pve_sim: Any, pve_guests: Any, namespace: str, kubectl: Any, start_operator: Any) -> Lab:
    pve = {
        **pve_json(pve_sim),
        "guestSshPort": pve_guests.ssh_port,
        "k3sInstallUrl": pve_guests.k3s.install_url,
        "k3sChannelUrl": f"{pve_guests.http_url}/v1-release/channels",
    }
    private, public = new_ssh_key()
    await asyncio.to_thread(
        kubectl,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(lab_secrets(pve, namespace, private)),
    )
    # the channel server is asked again every 2 s, so a channel move is seen quickly
    metrics_port = free_port()
    env = {"K3SD_CHANNEL_CHECK_SECONDS": "2", "K3SD_METRICS_PORT": str(metrics_port)}
    operator = await asyncio.to_thread(start_operator, namespace, env=env)
    lab = Lab(kubectl, namespace, pve, pve_guests, operator)
    lab.public_key = public
    lab.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    return lab


async def test_rolling_upgrade_order_pause_kill_resume_and_failure(lab: Lab) -> None:
    """3+2 cluster, v1.31 -> v1.32: servers one at a time, then agents, each cordoned and back;
    paused mid-way; the operator killed mid-rollout; then an upgrade that fails stops at its node."""
    await lab.apply(lab.manifest("up", 3, 2, k3s={**lab.manifest("up", 3, 2)["spec"]["k3s"], "version": A}))
    ready = await lab.ready("up")
    assert condition(ready, "UpToDate")["status"] == "True", ready["status"]["conditions"]
    assert ready["status"]["availableVersion"] == A  # the lab's stable channel
    servers = [f"up-server-{i}" for i in range(3)]
    agents = [f"up-agent-{i}" for i in range(2)]
    lab.installs.clear()

    # every change of every Node, streamed from the workload cluster's API (kubectl get -w)
    state: dict[str, tuple[str, bool, bool]] = {}
    kill_armed, killed = asyncio.Event(), asyncio.Event()
    seen: list[dict[str, tuple[str, bool, bool]]] = []
    watch_proc = await asyncio.create_subprocess_exec(
        kubectl_path(),
        "--kubeconfig",
        str(await lab.workload("up")),
        "get",
        "nodes",
        "--watch",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def watch() -> None:
        assert watch_proc.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        while chunk := await watch_proc.stdout.read(65536):
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    obj, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                state[obj["metadata"]["name"]] = (
                    kubelet(obj),
                    bool(obj["spec"].get("unschedulable")),
                    node_ready(obj),
                )
                seen.append(dict(state))
                if kill_armed.is_set() and not killed.is_set() and any(v[1] for v in state.values()):
                    lab.operator.kill()
                    killed.set()

    watcher = asyncio.create_task(watch())
    await lab.patch("up", {"spec": {"k3s": {"version": B}}})

    # pause once the first server is done
    async def first_done() -> bool:
        st = (await lab.cluster("up")).get("status") or {}
        return "up-server-0" in ((st.get("upgrade") or {}).get("completedNodes") or [])

    await lab.wait(first_done, "server-0 upgraded")
    await lab.patch("up", {"spec": {"paused": True}})
    paused = await lab.wait(
        lambda: _status_is(lab, "up", lambda st: (st.get("upgrade") or {}).get("state") == "Paused"), "Paused"
    )
    done_when_paused = len(paused["status"]["upgrade"]["completedNodes"])
    await asyncio.sleep(8)  # more than two resync periods: nothing moves while paused
    still = (await lab.cluster("up"))["status"]["upgrade"]
    assert len(still["completedNodes"]) == done_when_paused and not still.get("currentNodes")
    upgraded_while_paused = [i for i in lab.installs if B in i]
    assert len(upgraded_while_paused) == done_when_paused

    # resume, and kill the operator (SIGKILL) the moment the next node is cordoned: mid-batch
    kill_armed.set()
    await lab.patch("up", {"spec": {"paused": False}})
    await asyncio.wait_for(killed.wait(), timeout=120)
    flushed = (await lab.cluster("up"))["status"]["upgrade"]
    assert len(flushed["currentNodes"]) == 1, flushed  # recorded in flight before the node was touched
    await asyncio.to_thread(lab.operator.start)
    final = await lab.ready("up")
    watch_proc.terminate()
    await watcher
    await watch_proc.wait()

    st = final["status"]
    assert st["k3sVersion"] == B and st["upgrade"]["state"] == "Complete"
    # every node upgraded exactly once, servers first
    upgraded = [i.split()[1] for i in lab.installs if i.endswith(B)]
    assert sorted(upgraded) == sorted(servers + agents), lab.installs
    assert upgraded[:3] == servers and sorted(upgraded[3:]) == agents
    # from the cluster's API: at most one server cordoned or off its old version-and-Ready at a time
    assert len(seen) > 10
    for nodes in seen:
        busy = [n for n in servers if n in nodes and (nodes[n][1] or not nodes[n][2])]
        assert len(busy) <= 1, nodes
        agents_busy = [n for n in agents if n in nodes and nodes[n][1]]
        assert not agents_busy or all(nodes[s][0] == B for s in servers), nodes  # agents after servers
    # each node was cordoned before it changed version, and none is left cordoned
    for name in servers + agents:
        history = [nodes[name] for nodes in seen if name in nodes]
        first_new = next(i for i, v in enumerate(history) if v[0] == B)
        assert any(v[1] for v in history[:first_new]), (name, history)
    last = await lab.nodes("up")
    assert all(
        kubelet(n) == B and node_ready(n) and not n["spec"].get("unschedulable") for n in last.values()
    )

    # a failing upgrade stops at the first server, naming it; nothing else is touched
    lab.installs.clear()
    await lab.patch("up", {"spec": {"k3s": {"version": BROKEN}}})
    stalled = await lab.wait(
        lambda: _status_is(lab, "up", lambda s: (s.get("upgrade") or {}).get("state") == "Failed"), "Failed"
    )
    assert stalled["status"]["upgrade"]["failedNode"] == "up-server-0"
    assert "up-server-0" in condition(stalled, "Stalled")["message"]
    assert condition(stalled, "UpToDate")["reason"] == "UpgradeFailed"
    await asyncio.sleep(5)
    assert lab.installs == []  # the stand-in refused the download: nothing was installed anywhere
    nodes = await lab.nodes("up")
    assert all(kubelet(n) == B for n in nodes.values())


async def test_auto_upgrade_follows_the_channel(lab: Lab) -> None:
    """A cluster on channel stable with autoUpgrade: when the channel moves, the cluster rolls to it."""
    base = lab.manifest("ch", 1, 1)
    k3s = {key: v for key, v in base["spec"]["k3s"].items() if key != "version"}
    await lab.apply(lab.manifest("ch", 1, 1, k3s={**k3s, "channel": "stable", "autoUpgrade": True}))
    ready = await lab.ready("ch")
    assert ready["status"]["k3sVersion"] == A and ready["status"]["channelResolution"]["version"] == A
    lab.installs.clear()
    lab.guests.k3s.channels["stable"] = B  # the channel moves

    async def rolled() -> dict[str, Any] | None:
        obj = await lab.cluster("ch")
        st = obj.get("status") or {}
        done = (st.get("upgrade") or {}).get("state") == "Complete" and st.get("k3sVersion") == B
        return obj if done and condition(obj, "Ready").get("status") == "True" else None

    done = await lab.wait(rolled, "the cluster rolled to the channel's new version", within=120)
    assert done["status"]["availableVersion"] == B and condition(done, "UpToDate")["status"] == "True"
    assert [i.split()[1] for i in lab.installs] == ["ch-server-0", "ch-agent-0"], lab.installs
    assert all(kubelet(n) == B for n in (await lab.nodes("ch")).values())


async def test_smoke_scale_agents_and_repair_drift(lab: Lab, pve_sim: Any) -> None:
    """1 server + 2 agents -> 3 agents -> 1 agent; then a Node deleted and K3s removed by hand are repaired."""
    await lab.apply(lab.manifest("sc", 1, 2))
    await lab.ready("sc")
    await lab.patch("sc", {"spec": {"agents": {"replicas": 3}}})
    ready = await lab.ready("sc")
    assert ready["status"]["readyAgents"] == 3
    assert set(await lab.nodes("sc")) == {"sc-server-0", "sc-agent-0", "sc-agent-1", "sc-agent-2"}

    await lab.patch("sc", {"spec": {"agents": {"replicas": 1}}})
    await lab.ready("sc")

    async def gone() -> bool:
        vms = await lab.get("pvm")
        names = {i["metadata"]["name"] for i in vms["items"]}
        return names == {"sc-server-0", "sc-agent-0"}

    await lab.wait(gone, "ProxmoxVMs of removed agents deleted")
    assert set(await lab.nodes("sc")) == {"sc-server-0", "sc-agent-0"}
    events = await lab.get("events")
    reasons = [(e["reason"], e["message"]) for e in events["items"]]
    for agent in ("sc-agent-2", "sc-agent-1"):
        assert any(r == "NodeDeleted" and agent in m for r, m in reasons)
        assert any(r == "Uninstalled" and agent in m for r, m in reasons)

    # drift 1: the Node is deleted through the cluster's API -> rejoined
    workload = await lab.workload("sc")
    await lab.run("delete", "node", "sc-agent-0", kubeconfig=workload)

    async def back() -> bool:
        return "sc-agent-0" in await lab.nodes("sc")

    await lab.wait(back, "sc-agent-0 rejoined", within=60)
    # drift 2: K3s uninstalled by hand on the agent -> reinstalled
    installs_before = len(lab.installs)
    await asyncio.to_thread(_ssh_uninstall, lab, "sc", "sc-agent-0")
    await lab.wait(
        lambda: _true(len(lab.installs) > installs_before), "K3s reinstalled on sc-agent-0", within=60
    )
    healed = await lab.wait(
        lambda: _status_is(
            lab,
            "sc",
            lambda st: (
                {c["type"]: c["status"] for c in st.get("conditions") or []}.get("NodesInSync") == "True"
                and {c["type"]: c["status"] for c in st.get("conditions") or []}.get("Ready") == "True"
            ),
        ),
        "Ready and NodesInSync again",
        within=60,
    )
    assert healed["status"]["readyAgents"] == 1
    events = await lab.get("events")
    # The deleted Node may be registered again by the node itself (as a kubelet does) before a pass
    # sees it missing; K3s removed by hand is always the operator's to find and repair.
    drift = [e["message"] for e in events["items"] if e["reason"] == "DriftDetected"]
    assert any("sc-agent-0" in m for m in drift), drift


async def test_scale_servers_3_to_5_to_3(lab: Lab) -> None:
    """Servers join one at a time; on the way down they leave one at a time, highest index first,
    each deleted from the cluster (etcd) and uninstalled before its VM goes."""
    await lab.apply(lab.manifest("hs", 3, 0))
    await lab.ready("hs")
    await lab.patch("hs", {"spec": {"servers": {"replicas": 5}}})
    grown = await lab.ready("hs")
    assert grown["status"]["readyServers"] == 5
    nodes = await lab.nodes("hs")
    assert len(nodes) == 5 and all(node_ready(n) for n in nodes.values())
    assert all("node-role.kubernetes.io/etcd" in n["metadata"]["labels"] for n in nodes.values())

    await lab.patch("hs", {"spec": {"servers": {"replicas": 3}}})
    shrunk = await lab.ready("hs")
    assert shrunk["status"]["readyServers"] == 3

    async def vms_gone() -> bool:
        vms = await lab.get("pvm")
        return {i["metadata"]["name"] for i in vms["items"]} == {f"hs-server-{i}" for i in range(3)}

    await lab.wait(vms_gone, "ProxmoxVMs hs-server-3 and hs-server-4 deleted")
    assert set(await lab.nodes("hs")) == {f"hs-server-{i}" for i in range(3)}
    events = sorted((await lab.get("events"))["items"], key=lambda e: int(e["metadata"]["resourceVersion"]))
    steps = [
        (e["reason"], m)
        for e in events
        if e["reason"] in ("RemovingNode", "NodeDeleted", "Uninstalled", "VMRemoved")
        for m in ("hs-server-3", "hs-server-4")
        if m in e["message"]
    ]
    per_node = ["RemovingNode", "NodeDeleted", "Uninstalled", "VMRemoved"]
    assert steps == [(r, "hs-server-4") for r in per_node] + [(r, "hs-server-3") for r in per_node], steps
    assert shrunk["status"]["initServer"] == "hs-server-0"


async def test_stop_and_start_the_whole_cluster_and_vm_drift(lab: Lab, pve_sim: Any) -> None:
    """Stopped: agents go down before servers; Running: servers come up before agents; Ready again.
    Then a VM stopped outside the operator is started again and its node is Ready."""
    await lab.apply(lab.manifest("pw", 1, 2))
    await lab.ready("pw")
    order: list[tuple[str, str]] = []

    async def record() -> dict[str, str]:
        vms = await lab.get("pvm")
        states = {i["metadata"]["name"]: (i.get("status") or {}).get("powerState", "") for i in vms["items"]}
        for name, state in states.items():
            if not order or (name, state) not in order:
                order.append((name, state))
        return states

    await record()
    await lab.patch("pw", {"spec": {"powerState": "Stopped"}})
    await lab.wait(lambda: _all(record(), "Stopped"), "all VMs stopped")
    stopped = await lab.wait(
        lambda: _status_is(lab, "pw", lambda s: s.get("phase") == "Stopped"), "phase Stopped"
    )
    # asked to be stopped and stopped: Ready, so kstatus and Argo CD call it Current/Healthy (docs/gitops.md)
    assert condition(stopped, "Ready")["status"] == "True"
    assert condition(stopped, "Ready")["reason"] == "Stopped"
    first_server_off = order.index(("pw-server-0", "Stopped"))
    assert all(order.index((a, "Stopped")) < first_server_off for a in ("pw-agent-0", "pw-agent-1"))

    order.clear()
    await record()
    await lab.patch("pw", {"spec": {"powerState": "Running"}})
    await lab.wait(lambda: _all(record(), "Running"), "all VMs running")
    first_agent_on = min(order.index((a, "Running")) for a in ("pw-agent-0", "pw-agent-1"))
    assert order.index(("pw-server-0", "Running")) < first_agent_on
    ready = await lab.ready("pw")
    assert ready["status"]["readyAgents"] == 2 and condition(ready, "PoweredOn")["status"] == "True"
    assert all(node_ready(n) for n in (await lab.nodes("pw")).values())

    # drift: an agent's VM stopped behind the operator's back is started again and rejoins
    entry = next(n for n in ready["status"]["nodes"] if n["name"] == "pw-agent-0")
    vm = pve_sim.api().nodes(entry["pveNode"]).qemu(entry["vmid"])
    await asyncio.to_thread(lambda: pve_sim.wait_task(vm.status.stop.post()))

    async def node_down() -> bool:
        return not node_ready((await lab.nodes("pw"))["pw-agent-0"])

    await lab.wait(node_down, "pw-agent-0 NotReady in the cluster", within=60)

    async def healed() -> bool:
        running = await asyncio.to_thread(lambda: vm.status.current.get()["status"] == "running")
        nodes = await lab.nodes("pw")
        obj = await lab.cluster("pw")
        return (
            running
            and all(node_ready(n) for n in nodes.values())
            and condition(obj, "Ready")["status"] == "True"
        )

    await lab.wait(healed, "pw-agent-0 started again and Ready", within=120)


# --- helpers ----------------------------------------------------------------------------------------


async def _status_is(lab: Lab, name: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    obj = await lab.cluster(name)
    return obj if check(obj.get("status") or {}) else None


async def _all(states: Awaitable[dict[str, str]], state: str) -> bool:
    found = await states
    return bool(found) and all(v == state for v in found.values())


async def _true(value: bool) -> bool:
    return value


def _ssh_uninstall(lab: Lab, cluster: str, node: str) -> None:
    import asyncssh

    async def go() -> None:
        obj = json.loads(lab.kubectl("get", "k3sc", cluster, "-n", lab.ns, "-o", "json").stdout)
        entry = next(n for n in obj["status"]["nodes"] if n["name"] == node)
        secret = json.loads(lab.kubectl("get", "secret", "k3s-ssh-key", "-n", lab.ns, "-o", "json").stdout)
        key = asyncssh.import_private_key(base64.b64decode(secret["data"]["ssh-privatekey"]))
        async with asyncssh.connect(
            entry["ip"],
            port=int(lab.pve["guestSshPort"]),
            username="ubuntu",
            client_keys=[key],
            known_hosts=None,
        ) as conn:
            # checked by hand against the key the operator pinned
            assert conn.get_server_host_key().get_fingerprint() == entry["hostKeyFingerprint"]
            await conn.run("sudo /usr/local/bin/k3s-agent-uninstall.sh", check=True)

    asyncio.run(go())
