"""Values a guest reports, checked before they reach status (docs/security.md, item 6).

Root on a guest decides what ``k3s --version`` prints and what the Node objects of its cluster say.
Status has length limits (``k3sVersion`` at most 64 characters, ...): one oversized or multi-line
value would make every status write of the K3sCluster fail, hiding every other problem. So:

- versions and host-key fingerprints are refused, never truncated (``GuestInputRejected``, reason
  ``GuestValueInvalid``; the cluster stalls and the message names the node): a cut version would be
  compared and acted on (upgrades), a cut fingerprint would be pinned;
- Node names and addresses from the cluster's API that are not valid names/IPs are ignored: they
  cannot match a node of ours;
- free text (installer output, stderr) is only quoted after :func:`~k3s_deploy.ports.ssh.guest_text`
  (control characters out, bounded length).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable

from k3s_deploy import errors
from k3s_deploy.ports.ssh import guest_text
from k3s_deploy.ports.target import TargetNode
from k3s_deploy.services.k3scluster.install import VERSION_RE

INVALID = "GuestValueInvalid"
# status.nodes[].k3sVersion and status.k3sVersion allow 64 characters.
MAX_VERSION = 64
# A fingerprint as status keeps it (at most 128 characters), OpenSSH's "SHA256:" + 43 base64 characters
# in practice; the adapter computes it from the key, so this only keeps status writable.
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/=._:-]{1,121}$")
# A Kubernetes node name: a DNS-1123 subdomain.
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SHOWN = 32


def _refuse(node: str, what: str, value: str) -> errors.GuestInputRejected:
    shown = guest_text(value[:_SHOWN], _SHOWN) + ("..." if len(value) > _SHOWN else "")
    return errors.GuestInputRejected(
        f"node {node}: {what} {shown!r} ({len(value)} characters) is not one; the value is not recorded. "
        "Check the K3s installed there (spec.k3s.installSource)",
        reason=INVALID,
    )


def version(value: str | None, *, node: str, source: str) -> str | None:
    """``value`` if it is a K3s version of at most 64 characters; None stays None."""
    if not value:
        return None
    if len(value) > MAX_VERSION or not VERSION_RE.fullmatch(value):
        raise _refuse(node, f"the K3s version {source} reported", value)
    return value


def fingerprint(value: str, *, node: str) -> str:
    """``value`` if it is an OpenSSH SHA256 fingerprint ("" stays "": nothing was presented)."""
    if value and not _FINGERPRINT.fullmatch(value):
        raise _refuse(node, "the SSH host-key fingerprint", value)
    return value


def target_nodes(found: Iterable[TargetNode]) -> list[TargetNode]:
    """Nodes of the cluster's API fit for status: invalid names dropped, versions checked, addresses
    that are not IPs cleared."""
    out = []
    for node in found:
        if len(node.name) > 253 or not _NODE_NAME.fullmatch(node.name):
            continue
        kubelet = version(node.kubelet_version, node=node.name, source="the cluster's API") or ""
        ip = node.internal_ip
        try:
            ip = str(ipaddress.ip_address(ip)) if ip else None
        except ValueError:
            ip = None
        out.append(dataclasses.replace(node, kubelet_version=kubelet, internal_ip=ip))
    return out
