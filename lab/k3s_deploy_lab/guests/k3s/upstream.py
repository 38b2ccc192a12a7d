"""Where a K3s agent connects each time it starts: the ``server`` of its merged flags (the command
line, then config.yaml.d, then ``K3S_URL`` from the unit's env file: K3s's precedence, k3s/flags.py).

K3s's agent fetches its configuration from that URL at every start (https://docs.k3s.io/cli/agent), so
the stand-in checks there that the URL answers as the agent's own cluster (a kube-vip address, a load
balancer or a live server: :meth:`Joining.reachable`) and records it on the install (``server_url``):
a test can see which address an agent uses. When it does not answer, the agent falls back, as K3s's
client-side load balancer does, to a server of its cluster it learnt before (recorded, and logged as a
warning); with none live, its unit still starts (K3s retries; ``k3s-agent`` is a ``Type=exec`` unit)
but its kubelet never reports, so its Node goes NotReady, with the reason in the unit's log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from k3s_deploy_lab.guests.k3s.artefacts import log_file
from k3s_deploy_lab.guests.k3s.proxy import API_PORT
from k3s_deploy_lab.guests.k3s.units import Install, InstallFailed
from k3s_deploy_lab.guests.sshd import RunningGuest

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.control import K3sControl


def connect(control: K3sControl, guest: RunningGuest, install: Install) -> bool:
    """An agent's start: True when it reaches its cluster (through its URL, else a known server)."""
    if install.role != "agent":
        return True
    server = str(install.flags.get("server") or "")
    try:
        if not server:
            raise InstallFailed("Error: --server is required")
        cluster = control.joining.reachable(server)
        if cluster.id != install.cluster_id:
            raise InstallFailed(f"{server} answers as another cluster: its CA is not the token's")
    except InstallFailed as exc:
        own = control.clusters.get(install.cluster_id)
        live = sorted(n.ip for n in (own.nodes.values() if own else ()) if n.role == "server" and n.running)
        install.server_url = f"https://{live[0]}:{API_PORT}" if live else None
        how = f"using server {install.server_url}" if live else "server is not ready"
        with log_file(guest.root, "k3s-agent").open("a") as log:
            log.write(f'level=warning msg="Failed to connect to {server or "a server"}: {exc}; {how}"\n')
        control.log(f"k3s agent {install.node_name}: cannot reach {server or 'a server'}; {how}")
        return bool(live)
    install.server_url = server
    return True
