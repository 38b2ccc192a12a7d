"""The K3s stand-in's datastore: etcd snapshots (on demand, scheduled, retention), restore through
``--cluster-reset-restore-path`` with the other servers rejoining, and converting a single server
without embedded etcd to one with it (1 -> 3 -> 5 servers and back)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

import pytest

from fixtures.guests import Kubectl, LabGuest, eventually, lab_net, nodes, pointed_at, ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
NET = lab_net()
StartGuest = Callable[..., Awaitable[LabGuest]]
V1 = "v1.31.4+k3s1"
SNAPSHOTS = "/var/lib/rancher/k3s/server/db/snapshots"


async def _configmaps(kubectl: Kubectl, kubeconfig: str) -> set[str]:
    code, out, err = await kubectl(kubeconfig, "get configmaps -n default -o name")
    assert code == 0, err
    return set(out.split())


async def test_snapshot_save_ls_schedule_restore_and_rejoin(
    start_guest: StartGuest, host_kubectl: Kubectl
) -> None:
    srv1 = await start_guest(331, f"{NET}31", name="srv-1")
    srv2 = await start_guest(332, f"{NET}32", name="srv-2")
    env = f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=secret-one"
    result = await srv1.install_k3s(
        "server",
        "--cluster-init",
        "--etcd-snapshot-schedule-cron",
        "@every 1s",
        "--etcd-snapshot-retention",
        "2",
        env=env,
    )
    assert result.exit_status == 0, result.stderr
    result = await srv2.install_k3s("server", "--server", f"https://{NET}31:6443", env=env)
    assert result.exit_status == 0, result.stderr
    kubeconfig = pointed_at(await srv1.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}31")
    assert (await host_kubectl(kubeconfig, "create configmap before -n default"))[0] == 0

    saved = await srv1.run("k3s etcd-snapshot save --name pre")
    assert saved.exit_status == 0, saved.stderr
    match = re.search(r"Snapshot (pre-srv-1-\d+) saved\.", saved.stdout)
    assert match, saved.stdout
    name = match.group(1)
    listed = (await srv1.run("k3s etcd-snapshot ls", check=True)).stdout
    assert listed.splitlines()[0].split() == ["Name", "Location", "Size", "Created"]
    row = next(line.split() for line in listed.splitlines() if line.startswith(name))
    assert row[1] == f"file://{SNAPSHOTS}/{name}"
    assert int(row[2]) > 1000  # a real etcd snapshot, not a marker
    head = await srv1.run(f"stat -c %s {SNAPSHOTS}/{name}", check=True)
    assert int(head.stdout) == int(row[2])

    async def scheduled_kept_at_two() -> bool:
        out = (await srv1.run(f"ls {SNAPSHOTS}", check=True)).stdout.split()
        scheduled = [n for n in out if n.startswith("etcd-snapshot-srv-1-")]
        assert len(scheduled) <= 2, out  # retention 2
        return len(scheduled) == 2 and name in out  # retention prunes scheduled ones only

    await eventually(scheduled_kept_at_two, within=30)

    assert (await host_kubectl(kubeconfig, "create configmap after -n default"))[0] == 0
    running = await srv1.run(f"k3s server --cluster-reset --cluster-reset-restore-path={SNAPSHOTS}/{name}")
    assert running.exit_status == 1
    assert "address already in use" in running.stderr

    for server in (srv1, srv2):
        await server.run("systemctl stop k3s", check=True)
    missing = await srv1.run("k3s server --cluster-reset --cluster-reset-restore-path=/tmp/nope")
    assert missing.exit_status == 1
    assert "etcd: snapshot path does not exist: /tmp/nope" in missing.stderr
    reset = await srv1.run(f"k3s server --cluster-reset --cluster-reset-restore-path={SNAPSHOTS}/{name}")
    assert reset.exit_status == 0, reset.stderr
    assert "Managed etcd cluster membership has been reset" in reset.stdout
    await srv1.run("systemctl start k3s", check=True)
    names = await _configmaps(host_kubectl, kubeconfig)
    assert "configmap/before" in names
    assert "configmap/after" not in names  # created after the snapshot: gone with the restore

    stale = await srv2.run("systemctl start k3s")
    assert stale.exit_status == 1
    assert "remove it and start k3s again to rejoin" in stale.stdout + stale.stderr
    await srv2.run("rm -rf /var/lib/rancher/k3s/server/db && systemctl start k3s", check=True)

    async def both_ready() -> bool:
        listed = await nodes(host_kubectl, kubeconfig)
        return all(n in listed and ready(listed[n]) == "True" for n in ("srv-1", "srv-2"))

    await eventually(both_ready)
    deleted = await srv1.run(f"k3s etcd-snapshot delete {name}")
    assert deleted.exit_status == 0, deleted.stderr
    assert name not in (await srv1.run("k3s etcd-snapshot ls", check=True)).stdout


async def test_single_server_converts_to_embedded_etcd_and_scales_1_3_5_and_back(
    start_guest: StartGuest, host_kubectl: Kubectl
) -> None:
    servers = [await start_guest(341 + i, f"{NET}{41 + i}", name=f"cv-{i + 1}") for i in range(5)]
    first, *others = servers
    env = f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=secret-two"
    assert (await first.install_k3s("server", env=env)).exit_status == 0
    kubeconfig = pointed_at(await first.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}41")
    no_etcd = await first.run("k3s etcd-snapshot save")
    assert no_etcd.exit_status == 1
    assert "etcd database not found in /var/lib/rancher/k3s/server" in no_etcd.stderr
    assert (await first.run("test -f /var/lib/rancher/k3s/server/db/state.db")).exit_status == 0
    join = f"https://{NET}41:6443"
    refused = await others[0].install_k3s("server", "--server", join, env=env)
    assert refused.exit_status != 0
    assert "does not run embedded etcd" in refused.stdout + refused.stderr

    await first.run(
        "mkdir -p /etc/rancher/k3s/config.yaml.d && "
        "echo 'cluster-init: true' > /etc/rancher/k3s/config.yaml.d/50-etcd.yaml && systemctl restart k3s",
        check=True,
    )
    assert (await first.run("test -f /var/lib/rancher/k3s/server/db/etcd/name")).exit_status == 0

    async def roles(expected: set[str]) -> bool:
        listed = await nodes(host_kubectl, kubeconfig)
        etcd = {
            n for n, node in listed.items() if node["metadata"]["labels"].get("node-role.kubernetes.io/etcd")
        }
        return etcd == expected and all(ready(listed[n]) == "True" for n in expected)

    await eventually(lambda: roles({"cv-1"}))
    for count in (3, 5):
        for server in others[count - 3 : count - 1]:  # two at a time: 1 -> 3 -> 5
            result = await server.install_k3s("server", "--server", join, env=env)
            assert result.exit_status == 0, result.stderr
        await eventually(lambda count=count: roles({f"cv-{i + 1}" for i in range(count)}))
    for count in (3, 1):
        for server in others[count - 1 : count + 1]:  # 5 -> 3 -> 1
            await server.run("k3s-uninstall.sh", check=True)
        await eventually(lambda count=count: roles({f"cv-{i + 1}" for i in range(count)}))
    saved = await first.run("k3s etcd-snapshot save")
    assert saved.exit_status == 0, saved.stderr
    assert re.search(r"Snapshot on-demand-cv-1-\d+ saved\.", saved.stdout)


MANIFESTS = "/var/lib/rancher/k3s/server/manifests"
ADDON = """apiVersion: v1
kind: Namespace
metadata:
  name: lab-addon
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: lab-addon
data:
  colour: @COLOUR@
"""
CHART = """apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata:
  name: metallb
  namespace: kube-system
spec:
  repo: https://metallb.github.io/metallb
  chart: metallb
  version: 0.14.9
  targetNamespace: metallb-system
"""


async def test_auto_deploy_manifests_apply_update_and_remove(
    start_guest: StartGuest, host_kubectl: Kubectl
) -> None:
    srv = await start_guest(351, f"{NET}51", name="ad-1")
    await srv.run(f"mkdir -p {MANIFESTS} && ln -s /etc/passwd {MANIFESTS}/escape.yaml", check=True)
    await srv.run(f"cat > {MANIFESTS}/app.yaml <<'X'\n{ADDON.replace('@COLOUR@', 'blue')}X", check=True)
    assert (await srv.install_k3s("server", env=f"INSTALL_K3S_VERSION={V1}")).exit_status == 0
    kubeconfig = pointed_at(await srv.read("/etc/rancher/k3s/k3s.yaml"), f"{NET}51")

    async def get(args: str) -> tuple[int, str]:
        code, out, _ = await host_kubectl(kubeconfig, args)
        return code, out

    async def colour_is(value: str) -> bool:
        code, out = await get("get configmap settings -n lab-addon -o jsonpath={.data.colour}")
        return code == 0 and out == value

    await eventually(lambda: colour_is("blue"), within=30)

    async def addon_tracked() -> bool:
        code, out = await get("get addons.k3s.cattle.io app -n kube-system -o jsonpath={.spec.source}")
        return code == 0 and out == f"{MANIFESTS}/app.yaml"

    await eventually(addon_tracked, within=30)
    _, out = await get("get addons.k3s.cattle.io -n kube-system -o json")
    addons = {a["metadata"]["name"] for a in json.loads(out)["items"]}
    assert "escape" not in addons  # a symlink out of the guest is never read

    await srv.run(f"sed -i s/blue/green/ {MANIFESTS}/app.yaml", check=True)
    await eventually(lambda: colour_is("green"), within=30)
    await srv.run(f"cat > {MANIFESTS}/metallb.yaml <<'X'\n{CHART}X", check=True)

    async def chart_stored() -> bool:
        code, out = await get(
            "get helmcharts.helm.cattle.io metallb -n kube-system -o jsonpath={.spec.chart}"
        )
        return code == 0 and out == "metallb"

    await eventually(chart_stored, within=30)
    await srv.run(f"rm {MANIFESTS}/app.yaml", check=True)

    async def removed() -> bool:
        code, _ = await get("get configmap settings -n lab-addon")
        addon, _ = await get("get addons.k3s.cattle.io app -n kube-system")
        return code != 0 and addon != 0

    await eventually(removed, within=30)
    assert await chart_stored()  # the other file's objects stay
