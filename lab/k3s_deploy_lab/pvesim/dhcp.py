"""The simulator's DHCP server: one stable loopback lease per MAC address."""

from __future__ import annotations

import ipaddress

from k3s_deploy_lab.pvesim.model import State


def lease(state: State, mac: str) -> str:
    """The address leased to ``mac``, allocating the lowest free one (skipping network and .1)."""
    mac = mac.upper()
    if mac in state.leases:
        return state.leases[mac]
    net = ipaddress.IPv4Network(state.dhcp_range)
    used = set(state.leases.values())
    for offset, host in enumerate(net.hosts()):
        if offset == 0:
            continue  # the first host is the pool's gateway
        text = str(host)
        if text not in used:
            state.leases[mac] = text
            return text
    raise RuntimeError(f"DHCP pool {state.dhcp_range} exhausted")
