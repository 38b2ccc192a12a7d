"""Build the cluster's kubeconfig from what K3s wrote on a server, through an allow-list.

``/etc/rancher/k3s/k3s.yaml`` comes from a guest, and root on a guest is not trusted
(docs/security.md, item 1): an ``exec`` user would run a program inside the operator, a ``tokenFile``
would send one of the operator's files to the guest. So the file is never loaded or copied as it
is. Three values are taken from it, each parsed and re-encoded, and a fresh kubeconfig is built
around them with the server URL the operator chose and names of our own:

- ``certificate-authority-data`` (the cluster CA), ``client-certificate-data`` and
  ``client-key-data`` (the admin client certificate chain and its key): required. Missing, not
  PEM, or a key that does not belong to the certificate: the cluster stalls (``KubeconfigRejected``):
  without them the operator cannot verify or reach the API, and retrying reads the same file.
- More than one cluster or user: stall. K3s writes exactly one of each; which one to trust is not
  the operator's to guess.
- ``server``, names, contexts, ``current-context``, ``preferences``: replaced (K3s always writes them).
- Anything else (``exec``, ``auth-provider``, ``token``, ``tokenFile``, ``username``/``password``,
  file paths ``certificate-authority``/``client-certificate``/``client-key``, ``proxy-url``,
  ``insecure-skip-tls-verify``, ``tls-server-name``, ``extensions``, ...): dropped and named in
  :attr:`GuestKubeconfig.dropped` (the caller reports them in an Event). K3s never writes them, so
  they mean tampering, but the result carries none of them and the certificate alone authenticates.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from cryptography import x509

from k3s_deploy import errors
from k3s_deploy.ports.target import KUBECONFIG_CLUSTER_FIELDS, KUBECONFIG_USER_FIELDS

K3S_KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"
API_PORT = 6443
REJECTED = "KubeconfigRejected"
# Certificates accepted in one field: a CA bundle or a client chain is a handful, never hundreds.
MAX_CERTIFICATES = 8

# How many dropped field names an Event lists.
MAX_DROPPED = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

_TOP_EXPECTED = frozenset(
    {"apiVersion", "kind", "clusters", "contexts", "current-context", "preferences", "users"}
)


@dataclass(frozen=True)
class GuestKubeconfig:
    """The allowed content of a guest's kubeconfig, each value parsed and re-encoded as PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    dropped: tuple[str, ...] = ()

    def build(self, *, server: str, name: str) -> str:
        """A kubeconfig of exactly one cluster, user and context named ``name``, pointing at ``server``."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(self.ca_pem)}}
            ],
            "users": [
                {
                    "name": name,
                    "user": {
                        "client-certificate-data": _b64(self.cert_pem),
                        "client-key-data": _b64(self.key_pem),
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        }
        return str(yaml.safe_dump(doc, sort_keys=False))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def endpoint_url(endpoint: str) -> str:
    """The URL of spec.endpoint (``host`` or ``host:port``; port 6443 when none is written)."""
    host, _, port = endpoint.partition(":")
    return server_url(host, int(port) if port else API_PORT)


def server_url(host: str, port: int = API_PORT) -> str:
    """``https://host:port``, bracketing IPv6 literals; a full URL passes through unchanged."""
    if host.startswith(("https://", "http://")):
        return host
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def _reject(what: str) -> errors.GuestInputRejected:
    return errors.GuestInputRejected(
        f"the kubeconfig K3s wrote ({K3S_KUBECONFIG_PATH}) {what}; it is not used. Check the server's K3s "
        "installation (spec.k3s.installSource) or reinstall it",
        reason=REJECTED,
    )


def _only(doc: dict[str, Any], key: str) -> dict[str, Any]:
    entries = doc.get(key)
    if not isinstance(entries, list) or not entries:
        raise _reject(f"has no {key}")
    if len(entries) > 1:
        raise _reject(f"has {len(entries)} {key}; K3s writes exactly one")
    entry = entries[0]
    inner = entry.get(key[:-1]) if isinstance(entry, dict) else None
    if not isinstance(inner, dict):
        raise _reject(f"has a malformed {key[:-1]} entry")
    return inner


def _pem_field(section: dict[str, Any], key: str) -> bytes:
    value = section.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _reject(f"has no {key}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _reject(f"has a {key} that is not base64") from None


# cryptography is imported where a kubeconfig is read, not with this module: about 5 MiB that an
# operator handling only ProxmoxVMs never needs (see docs/performance.md).


def _certificates(data: bytes, key: str) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _reject(f"has a {key} that is not PEM certificates") from None
    if len(certs) > MAX_CERTIFICATES:
        raise _reject(f"has {len(certs)} certificates in {key} (at most {MAX_CERTIFICATES})")
    return certs


def _pem(certs: list[x509.Certificate]) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def sanitise(text: str) -> GuestKubeconfig:
    """Take the CA, client certificate and key out of a guest's kubeconfig, or raise
    ``GuestInputRejected`` (reason ``KubeconfigRejected``) saying what is wrong."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError:
        raise _reject("is not valid YAML") from None
    if not isinstance(doc, dict):
        raise _reject("is not a kubeconfig")
    cluster, user = _only(doc, "clusters"), _only(doc, "users")
    ca = _certificates(_pem_field(cluster, "certificate-authority-data"), "certificate-authority-data")
    chain = _certificates(_pem_field(user, "client-certificate-data"), "client-certificate-data")
    try:
        key = serialization.load_pem_private_key(_pem_field(user, "client-key-data"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise _reject("has a client-key-data that is not an unencrypted PEM private key") from None
    if _public(key.public_key()) != _public(chain[0].public_key()):
        raise _reject("has a client-key-data that does not belong to its client certificate")
    dropped = [_field(k) for k in doc if k not in _TOP_EXPECTED]
    dropped += [f"cluster.{_field(k)}" for k in cluster if k not in KUBECONFIG_CLUSTER_FIELDS]
    dropped += [f"user.{_field(k)}" for k in user if k not in KUBECONFIG_USER_FIELDS]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return GuestKubeconfig(_pem(ca), _pem(chain), key_pem, tuple(sorted(set(dropped))[:MAX_DROPPED]))


def _field(key: object) -> str:
    """A field name fit for an Event: the guest chose it, so only a bounded, printable form."""
    return _UNSAFE.sub("?", str(key))[:64]
