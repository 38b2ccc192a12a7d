"""spec.endpoint and spec.kubeVip: what both layers (pydantic, the apiserver's CEL) refuse and accept."""

from __future__ import annotations

from unit.api.cases import HA, Invalid, Valid, _all, _drop, _set

KUBE_VIP_NEEDS_IP = "spec.kubeVip needs spec.endpoint to be an IPv4 address"

ENDPOINT_INVALID: tuple[Invalid, ...] = (
    Invalid(
        "cluster-endpoint-url",
        HA,
        _set("spec.endpoint", "https://k3s.example.internal:6443"),
        "is not a host name or IPv4 address with an optional :port",
    ),
    Invalid(
        "cluster-endpoint-port-out-of-range",
        HA,
        _set("spec.endpoint", "192.168.1.50:70000"),
        "is not a host name or IPv4 address with an optional :port",
    ),
    Invalid(
        "cluster-kube-vip-without-endpoint",
        HA,
        _all(_drop("spec.endpoint"), _set("spec.kubeVip", {})),
        KUBE_VIP_NEEDS_IP,
    ),
    Invalid(
        "cluster-kube-vip-on-a-dns-name",
        HA,
        _all(_set("spec.endpoint", "k3s.example.internal"), _set("spec.kubeVip", {})),
        KUBE_VIP_NEEDS_IP,
    ),
    Invalid(
        "cluster-kube-vip-on-another-port",
        HA,
        _all(_set("spec.endpoint", "192.168.1.50:443"), _set("spec.kubeVip", {})),
        KUBE_VIP_NEEDS_IP,
    ),
    Invalid(
        "cluster-kube-vip-bad-interface",
        HA,
        _all(_set("spec.endpoint", "192.168.1.50"), _set("spec.kubeVip", {"interface": "eth0; reboot"})),
        "is not a Linux network interface name",
    ),
    Invalid(
        "cluster-kube-vip-image-with-newline",
        HA,
        _all(_set("spec.endpoint", "192.168.1.50"), _set("spec.kubeVip", {"image": "evil\nkind: Pod"})),
        "is not a container image reference",
    ),
)

ENDPOINT_VALID: tuple[Valid, ...] = (
    Valid("cluster-endpoint-lb-with-port", HA, _set("spec.endpoint", "lb.example.internal:443")),
    Valid("cluster-endpoint-ip", HA, _set("spec.endpoint", "192.168.1.50")),
    Valid(
        "cluster-kube-vip",
        HA,
        _all(_set("spec.endpoint", "192.168.1.50"), _set("spec.kubeVip", {"interface": "ens18"})),
    ),
    Valid(
        "cluster-kube-vip-explicit-port-and-mirror",
        HA,
        _all(
            _set("spec.endpoint", "192.168.1.50:6443"),
            _set("spec.kubeVip", {"image": "registry.example.internal:5000/kube-vip/kube-vip:v0.8.9"}),
        ),
    ),
)
