"""spec.endpoint in a pass: the URL joins and the kubeconfig Secret use, kube-vip's manifest on the
servers, and the check that the endpoint answers before anything joins through it.

The endpoint comes from the spec only; a guest never tells us where it is. The check runs curl on a
server against the cluster CA K3s wrote there: a guest could at most make us wait or try a join early
(which then fails and is retried), never change where anything points.
"""

from __future__ import annotations

import shlex

from k3s_deploy import errors
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy.services.k3scluster import access, kubevip
from k3s_deploy.services.k3scluster.kubeconfig import endpoint_url
from k3s_deploy.services.k3scluster.state import WAIT_DELAY, ClusterPass, NodeView

SERVER_CA = "/var/lib/rancher/k3s/server/tls/server-ca.crt"

# (cluster uid, node, vmid) -> digest of the manifest last placed there by this process: saves SSH
# round trips (a restarted operator places each file once more, which changes nothing). Whether a
# manifest is there to remove (spec.kubeVip unset) is read by the probe on every pass, so removal
# does not depend on this process having placed it.
_placed: dict[tuple[str, str, int | None], str] = {}


def wanted_manifest(r: ClusterPass) -> str | None:
    if r.spec.kube_vip is None or r.spec.endpoint is None:
        return None
    return kubevip.manifest(r.spec.kube_vip, r.spec.endpoint)


async def place(r: ClusterPass, view: NodeView, target: SshTarget) -> None:
    """Write (or remove) the kube-vip manifest in this server's auto-deploy directory."""
    text = wanted_manifest(r)
    key = (r.ref.uid, view.name, view.vmid)
    want = kubevip.digest(text)
    if text is None and not view.kube_vip_manifest:
        _placed.pop(key, None)
        return  # nothing wanted, and the probe found no manifest there
    if text is not None and _placed.get(key) == want:
        return  # in place already
    result = await r.deps.ssh.run(target, "sh -s", input=kubevip.place_script(text), timeout_s=60.0)
    if not result.ok:
        raise errors.TransientError(
            f"node {view.name}: could not write {kubevip.MANIFEST_PATH} (exit {result.exit_status})",
            reason="KubeVipManifestFailed",
        )
    if text is not None and _placed.get(key) != want:
        r.event("Normal", "KubeVipManifestWritten", f"kube-vip for {r.spec.endpoint} placed on {view.name}")
    view.kube_vip_manifest = text is not None
    _placed[key] = want


async def sync(r: ClusterPass, private_key: str) -> None:
    """Every server that runs K3s carries the manifest the spec asks for (added, changed or removed
    on day 2 too); a server being installed got it before its install."""
    for view in list(r.views.values()):
        if view.role == "server" and view.ip and view.k3s_version and view.server_up:
            await place(r, view, access.node_target(r, view, private_key))


async def answers(r: ClusterPass, private_key: str) -> None:
    """Raise NotYet until spec.endpoint answers TLS with this cluster's CA, seen from a running server
    (joins through an endpoint that does not answer would hang until the command timeout)."""
    if r.spec.endpoint is None:
        return
    target_url = endpoint_url(r.spec.endpoint)
    servers = [v for v in r.views.values() if v.role == "server" and v.ip and v.k3s_version and v.server_up]
    if not servers:
        raise errors.GuestNotReady("waiting for a server that runs K3s before anything joins")
    anchor = next((v for v in servers if v.name == r.status.init_server), servers[0])
    command = (
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 --cacert {SERVER_CA} "
        f"{shlex.quote(target_url + '/ping')}"
    )
    result = await r.deps.ssh.run(access.node_target(r, anchor, private_key), command, timeout_s=30.0)
    code = result.stdout.strip()[-3:]
    if result.ok and code.isdigit() and code != "000":
        return
    how = "kube-vip is starting on the servers" if r.spec.kube_vip else "your load balancer must forward it"
    message = (
        f"waiting for spec.endpoint {r.spec.endpoint} to answer as this cluster's API before nodes join "
        f"through it ({how}; checked from {anchor.name})"
    )
    r.conditions.reconciling(True, "WaitingForEndpoint", message)
    raise errors.NotYet(WAIT_DELAY, "WaitingForEndpoint", message)
