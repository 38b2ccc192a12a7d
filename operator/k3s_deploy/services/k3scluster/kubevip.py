"""kube-vip as a K3s auto-deploy manifest: the leader among the live servers holds spec.endpoint.

The manifest (ServiceAccount, RBAC, a DaemonSet on the control-plane nodes in ARP mode with leader
election) goes into every server's ``/var/lib/rancher/k3s/server/manifests/`` before K3s starts there,
so the first server brings up the address by itself and any surviving server keeps the manifest. K3s
applies the file; removing it (spec.kubeVip unset) removes the objects.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Any

import yaml

from k3s_deploy.api.endpoint import API_PORT, KubeVip, endpoint_host

MANIFEST_PATH = "/var/lib/rancher/k3s/server/manifests/k3s-deploy-kube-vip.yaml"
NAME = "kube-vip"
LEASE = "plndr-cp-lock"  # kube-vip's control-plane lease in kube-system
_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "k3s-deploy"}


def manifest(kube_vip: KubeVip, endpoint: str) -> str:
    """The YAML documents kube-vip needs, for the address ``endpoint`` (validated: an IPv4 address)."""
    env: list[dict[str, Any]] = [
        {"name": "address", "value": endpoint_host(endpoint)},
        {"name": "port", "value": str(API_PORT)},
        {"name": "vip_arp", "value": "true"},
        {"name": "vip_cidr", "value": "32"},
        {"name": "vip_nodename", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "cp_enable", "value": "true"},
        {"name": "cp_namespace", "value": "kube-system"},
        {"name": "svc_enable", "value": "false"},
        {"name": "vip_leaderelection", "value": "true"},
        {"name": "vip_leasename", "value": LEASE},
        {"name": "vip_leaseduration", "value": "5"},
        {"name": "vip_renewdeadline", "value": "3"},
        {"name": "vip_retryperiod", "value": "1"},
    ]
    if kube_vip.interface:
        env.insert(2, {"name": "vip_interface", "value": kube_vip.interface})
    meta = {"name": NAME, "namespace": "kube-system", "labels": _LABELS}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "k3s-deploy:kube-vip", "labels": _LABELS},
            "rules": [
                {"apiGroups": [""], "resources": ["services/status"], "verbs": ["update"]},
                {
                    "apiGroups": [""],
                    "resources": ["services", "endpoints"],
                    "verbs": ["list", "get", "watch", "update"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["nodes"],
                    "verbs": ["list", "get", "watch", "update", "patch"],
                },
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["list", "get", "watch", "update", "create"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "get", "watch", "update"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "k3s-deploy:kube-vip", "labels": _LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "k3s-deploy:kube-vip",
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": "kube-system"}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": _LABELS},
                    "spec": {
                        "affinity": {
                            "nodeAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": {
                                    "nodeSelectorTerms": [
                                        {
                                            "matchExpressions": [
                                                {
                                                    "key": "node-role.kubernetes.io/control-plane",
                                                    "operator": "Exists",
                                                }
                                            ]
                                        }
                                    ]
                                }
                            }
                        },
                        "tolerations": [
                            {"effect": "NoSchedule", "operator": "Exists"},
                            {"effect": "NoExecute", "operator": "Exists"},
                        ],
                        "hostNetwork": True,
                        "serviceAccountName": NAME,
                        "containers": [
                            {
                                "name": NAME,
                                "image": kube_vip.image,
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["manager"],
                                "env": env,
                                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                            }
                        ],
                    },
                },
            },
        },
    ]
    return "# Written by k3s-deploy from spec.kubeVip; edits are overwritten.\n" + yaml.safe_dump_all(
        docs, sort_keys=False
    )


def digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()[:16]


def place_script(text: str | None) -> str:
    """Shell that writes ``text`` to the manifest path (atomically, only when it differs), or removes
    the file when ``text`` is None. K3s notices either within seconds."""
    path = shlex.quote(MANIFEST_PATH)
    if text is None:
        return f"rm -f {path}\n"
    return "\n".join(
        [
            "set -eu",
            f"mkdir -p {shlex.quote(MANIFEST_PATH.rsplit('/', 1)[0])}",
            'tmp="$(mktemp)"',
            "trap 'rm -f \"$tmp\"' EXIT",
            "cat > \"$tmp\" <<'K3S_DEPLOY_KUBE_VIP'",
            text.rstrip("\n"),
            "K3S_DEPLOY_KUBE_VIP",
            f'cmp -s "$tmp" {path} || {{ chmod 0600 "$tmp" && mv "$tmp" {path}; }}',
            "",
        ]
    )
