"""The stable control-plane endpoint of a K3sCluster and kube-vip, the floating VIP that can provide it.

Joining servers, agents and the kubeconfig Secret use ``spec.endpoint``; either the user runs a load
balancer (or DNS name) there, or ``spec.kubeVip`` makes the operator deploy kube-vip with that address.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from k3s_deploy.api.common import ApiModel, Rule
from k3s_deploy.api.formats import Pattern, cel_string

API_PORT = 6443
KUBE_VIP_IMAGE = "ghcr.io/kube-vip/kube-vip:v0.8.9"

_LABEL = r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE = rf"{_OCTET}(\.{_OCTET}){{3}}"
ENDPOINT_RE = rf"{_LABEL}(\.{_LABEL})*(:{_PORT})?"
# kube-vip moves an address between the servers; the API behind it listens on K3s's port.
KUBE_VIP_ENDPOINT_RE = rf"{IPV4_RE}(:{API_PORT})?"

Endpoint = Annotated[
    str,
    Pattern(
        ENDPOINT_RE,
        259,
        "is not a host name or IPv4 address with an optional :port "
        "(like k3s.example.internal, 192.168.1.50 or lb.example.internal:443)",
    ),
]
ContainerImage = Annotated[
    str,
    Pattern(
        r"[a-z0-9][-a-zA-Z0-9._/:@]*",
        512,
        "is not a container image reference such as registry.example.internal/kube-vip/kube-vip:v0.8.9",
    ),
]
InterfaceName = Annotated[
    str,
    Pattern(r"[a-zA-Z0-9][-a-zA-Z0-9._]{0,14}", 15, "is not a Linux network interface name such as eth0"),
]


class KubeVip(ApiModel):
    """Deploy kube-vip on the servers: one of them holds spec.endpoint as a floating address (ARP)."""

    image: ContainerImage = Field(
        default=KUBE_VIP_IMAGE,
        description=(
            f"kube-vip image, pinned to {KUBE_VIP_IMAGE} by default. Point it at your own registry on an "
            "air-gapped site (the image must be in the nodes' registry mirror or image archive)."
        ),
    )
    interface: InterfaceName | None = Field(
        default=None,
        description=(
            "Network interface the address is announced on, e.g. eth0 or ens18. Unset: kube-vip uses the "
            "interface of the default route."
        ),
    )


def endpoint_host(endpoint: str) -> str:
    """``lb.example:443`` -> ``lb.example`` (the name that goes into the TLS SANs)."""
    return endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint


def endpoint_port(endpoint: str) -> int:
    """The port of ``endpoint``; K3s's API port when none is written."""
    return int(endpoint.rsplit(":", 1)[1]) if ":" in endpoint else API_PORT


def is_kube_vip_address(endpoint: str) -> bool:
    return re.fullmatch(KUBE_VIP_ENDPOINT_RE, endpoint) is not None


ENDPOINT_DESCRIPTION = (
    "Stable address of the Kubernetes API in front of the servers: a DNS name or IPv4 address with "
    "an optional :port (default 6443), e.g. k3s.example.internal or 192.168.1.50. Either a load "
    "balancer you run forwards it to every server's :6443, or set kubeVip to have the operator "
    "deploy kube-vip with this address as a floating VIP. Joining servers and agents register "
    "through it, it is added to the TLS SANs, and the kubeconfig Secret points at it. A change (set, "
    "changed or unset) rolls out like other K3s settings: servers restart with the new SAN, then each "
    "agent restarts into the new URL once it answers; keep an old load balancer until Ready."
)
KUBE_VIP_DESCRIPTION = (
    "Deploy kube-vip (a DaemonSet on the servers, ARP mode with leader election) so that the leader "
    "among the live servers answers on spec.endpoint, which must then be a free IPv4 address in the "
    "servers' subnet. Unset: whatever answers on spec.endpoint is yours to run."
)
# a rule of K3sClusterSpec (kept here with the fields it relates)
KUBE_VIP_NEEDS_AN_ADDRESS = Rule(
    "!has(self.kubeVip) || (has(self.endpoint) && self.endpoint.matches("
    + cel_string("^" + KUBE_VIP_ENDPOINT_RE + "$")
    + "))",
    "spec.kubeVip needs spec.endpoint to be an IPv4 address (optionally with :6443) for kube-vip to "
    "float between the servers, like 192.168.1.50; with a DNS name run your own load balancer and "
    "leave kubeVip unset",
    lambda m: m.kube_vip is None or (m.endpoint is not None and is_kube_vip_address(m.endpoint)),
    field_path=".endpoint",
)
