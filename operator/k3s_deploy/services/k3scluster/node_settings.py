"""Each member's K3s settings files for this pass: the spec's arguments, SANs and registries (their
Secrets read through the objects port), rendered by :mod:`node_config`.

A Secret the registries name that is missing, or lacks the keys it needs, is a permanent error naming
the Secret and the key (Stalled until the user fixes it); its values are never put in a message.
"""

from __future__ import annotations

import dataclasses
import hashlib

from k3s_deploy import errors
from k3s_deploy.api.registries import RegistryConfig
from k3s_deploy.services.k3scluster import install, node_config
from k3s_deploy.services.k3scluster.secrets import read_user_secret
from k3s_deploy.services.k3scluster.state import ClusterPass


async def with_files(r: ClusterPass, settings: install.K3sSettings) -> install.K3sSettings:
    """``settings`` with every member's files and digest (keyed by the cluster's server token)."""
    material = await registries(r)
    sans = tuple(install.tls_sans(settings, []))
    # The server password cannot change for the cluster's life (it encrypts K3s's bootstrap data).
    key = hashlib.sha256(b"k3s-deploy node config\0" + r.tokens.server.encode()).digest()
    joins = join_urls(r, settings)
    out: dict[str, node_config.NodeFiles] = {}
    for view in r.views.values():
        node = node_config.NodeSettings(
            role=view.role,
            args=settings.server_args if view.role == "server" else settings.agent_args,
            tls_sans=sans,
            labels=view.node_labels,
            taints=view.node_taints,
            registries=material,
            server=joins.get(view.name),
        )
        files = node_config.render(node)
        out[view.name] = node_config.NodeFiles(files, node_config.digest(files, key), node.server)
    return dataclasses.replace(settings, node_files=out)


def join_urls(r: ClusterPass, settings: install.K3sSettings) -> dict[str, str]:
    """The URL each member joins through (as the install plan has it), by name. The init server has
    none: it started the cluster (rebuilt, it rejoins with --server on the installer's command line, and
    its etcd data makes K3s skip the join afterwards). With no endpoint and an anchor without an
    address yet, nobody has one (the installer's command line then carries it)."""
    facts = [install.NodeFacts(v.name, v.role, v.ip, v.k3s_version) for v in r.views.values()]
    servers = [f for f in facts if f.role == "server"]
    if not servers:
        return {}
    init, anchor = install.init_and_anchor(servers, r.status.init_server)
    url = install.join_url(settings, anchor)
    return {f.name: url for f in facts if url and f.name != init.name}


async def registries(r: ClusterPass) -> node_config.RegistriesMaterial | None:
    spec = r.spec.k3s.registries
    if spec is None:
        return None
    mirrors = tuple(
        node_config.Mirror(
            m.registry, tuple(m.endpoints), tuple((w.pattern, w.replacement) for w in m.rewrites)
        )
        for m in spec.mirrors
    )
    configs = tuple([await _host(r, c) for c in spec.configs])
    return node_config.RegistriesMaterial(mirrors, configs)


async def _host(r: ClusterPass, c: RegistryConfig) -> node_config.RegistryHost:
    values: dict[str, str | None] = {}
    if c.auth_secret_ref is not None:
        data = await _secret(r, c.auth_secret_ref.name, f"registry auth for {c.host}", "authSecretRef")
        if data.get("token"):
            values["token"] = _text(data, "token", c.auth_secret_ref.name)
        elif data.get("username") and data.get("password"):
            values["username"] = _text(data, "username", c.auth_secret_ref.name)
            values["password"] = _text(data, "password", c.auth_secret_ref.name)
        else:
            raise errors.CredentialsError(
                f"Secret {c.auth_secret_ref.name!r} (registry auth for {c.host}) needs keys username and "
                f"password, or key token (keys: {', '.join(sorted(data)) or 'none'})",
                reason="SecretKeyMissing",
            )
    if c.tls_secret_ref is not None:
        name = c.tls_secret_ref.name
        data = await _secret(r, name, f"registry TLS for {c.host}", "tlsSecretRef")
        values["ca"] = _pem(data, "ca.crt", name)
        values["cert"] = _pem(data, "tls.crt", name)
        values["key"] = _pem(data, "tls.key", name)
        if (values["cert"] is None) != (values["key"] is None) or not any(values.values()):
            raise errors.CredentialsError(
                f"Secret {name!r} (registry TLS for {c.host}) needs ca.crt, or tls.crt with tls.key "
                f"(keys: {', '.join(sorted(data)) or 'none'})",
                reason="SecretKeyMissing",
            )
    return node_config.RegistryHost(c.host, **values, insecure_skip_verify=c.insecure_skip_verify)


async def _secret(r: ClusterPass, name: str, what: str, ref: str) -> dict[str, bytes]:
    field = f"spec.k3s.registries.configs[].{ref} ({what})"
    data = await read_user_secret(r.deps.objects, r.ref.namespace, name, field=field)
    if data is None:
        raise errors.CredentialsError(
            f"Secret {name!r} ({what}) not found in namespace {r.ref.namespace!r}; create it or "
            "change spec.k3s.registries",
            reason="SecretNotFound",
        )
    return data


def _text(data: dict[str, bytes], key: str, name: str) -> str:
    try:
        value = data[key].decode().strip()
    except UnicodeDecodeError as exc:
        raise errors.CredentialsError(
            f"key {key!r} of Secret {name!r} is not text", reason="SecretInvalid"
        ) from exc
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise errors.CredentialsError(
            f"key {key!r} of Secret {name!r} contains a control character; store the value on one line",
            reason="SecretInvalid",
        )
    return value


def _pem(data: dict[str, bytes], key: str, name: str) -> str | None:
    raw = data.get(key)
    if not raw:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise errors.CredentialsError(
            f"key {key!r} of Secret {name!r} is not PEM text", reason="SecretInvalid"
        ) from exc
