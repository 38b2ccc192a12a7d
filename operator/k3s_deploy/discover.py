"""``k3s-deploy discover``: list what a K3sCluster's ``spec.discovery`` would adopt, read-only.

Files in, one ``GET /cluster/resources`` out (plus nothing else with an API token): the manifest is
validated by the same models the apiserver's schema comes from, the credentials by the operator's own
parser, and the verdict by :mod:`k3s_deploy.services.k3scluster.preview`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from k3s_deploy import errors
from k3s_deploy.api.k3scluster import K3sCluster
from k3s_deploy.ports.proxmox import ProxmoxCredentials, VmSummary
from k3s_deploy.services.k3scluster.preview import Candidate, preview
from k3s_deploy.services.ownership import AdoptionPolicy
from k3s_deploy.services.proxmoxvm.credentials import parse_credentials

COLUMNS = ("NODE", "VMID", "NAME", "STATUS", "TAGS", "ADOPTABLE", "REASON")


class DiscoverError(Exception):
    """A problem with the command's input, said so that the user knows what to fix."""


@dataclass(frozen=True)
class CredentialFlags:
    url: str | None = None
    token_id: str | None = None
    token_secret: str | None = None
    ca_cert: Path | None = None
    fingerprint: str | None = None


def _documents(path: Path) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise DiscoverError(f"cannot read {path}: {exc}") from None
    return [d for d in docs if isinstance(d, dict)]


def load_cluster(path: Path) -> K3sCluster:
    """The one K3sCluster in ``path``; it must use spec.discovery."""
    found = [d for d in _documents(path) if d.get("kind") == "K3sCluster"]
    if len(found) != 1:
        raise DiscoverError(f"{path} holds {len(found)} K3sCluster manifests; give a file with exactly one")
    try:
        cluster = K3sCluster.model_validate(found[0])
    except ValidationError as exc:
        raise DiscoverError(f"{path}: the K3sCluster is invalid:\n{exc}") from None
    if cluster.spec.discovery is None:
        raise DiscoverError(
            f"{path}: K3sCluster {cluster.metadata.get('name')} has no spec.discovery (it clones its VMs); "
            "there is nothing to discover"
        )
    return cluster


def _secret_data(doc: Mapping[str, Any], path: Path) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise DiscoverError(f"{path}: data.{key} of the Secret is not base64") from None
    for key, value in (doc.get("stringData") or {}).items():
        data[str(key)] = str(value).encode()
    return data


def load_credentials(
    cluster: K3sCluster, secret_file: Path | None, flags: CredentialFlags
) -> ProxmoxCredentials:
    """From a Secret manifest (the one spec.credentialsRef names), or from flags/environment."""
    spec = cluster.spec
    name = spec.credentials_ref.name
    fingerprint = flags.fingerprint or spec.fingerprint
    if secret_file is not None:
        secrets = [d for d in _documents(secret_file) if d.get("kind") == "Secret"]
        named = [d for d in secrets if (d.get("metadata") or {}).get("name") == name]
        chosen = named or (secrets if len(secrets) == 1 else [])
        if not chosen:
            raise DiscoverError(
                f"{secret_file} holds no Secret named {name!r} (spec.credentialsRef.name)"
                + (f" among {len(secrets)} Secrets" if secrets else "")
            )
        data = _secret_data(chosen[0], secret_file)
        source = name
    elif flags.url:
        data = {"url": flags.url.encode()}
        for key, value in (("tokenId", flags.token_id), ("tokenSecret", flags.token_secret)):
            if value:
                data[key] = value.encode()
        if flags.ca_cert is not None:
            try:
                data["caCert"] = flags.ca_cert.read_bytes()
            except OSError as exc:
                raise DiscoverError(f"cannot read the CA certificate: {exc}") from None
        source = "given by flags"
    else:
        raise DiscoverError(
            "no Proxmox credentials: pass --credentials FILE (a Secret manifest), or --url with "
            "--token-id and --token-secret (or K3SD_PROXMOX_URL, K3SD_PROXMOX_TOKEN_ID, K3SD_PROXMOX_TOKEN_SECRET)"
        )
    try:
        return parse_credentials(
            source, data, fingerprint=fingerprint, insecure_skip_tls_verify=spec.insecure_skip_tls_verify
        )
    except errors.CredentialsError as exc:
        raise DiscoverError(str(exc)) from None


async def _list_vms(credentials: ProxmoxCredentials, http_timeout: float) -> list[VmSummary]:
    from k3s_deploy.adapters.proxmox import ProxmoxerConnector

    connector = ProxmoxerConnector(timeout=http_timeout, concurrency=1)
    try:
        return await connector.connect(credentials).cluster_vms()
    finally:
        connector.close()


def evaluate(
    cluster: K3sCluster, credentials: ProxmoxCredentials, policy: AdoptionPolicy, *, timeout: float = 30.0
) -> list[Candidate]:
    discovery = cluster.spec.discovery
    assert discovery is not None
    try:
        vms = asyncio.run(_list_vms(credentials, timeout))
        return preview(
            str(cluster.metadata.get("name", "")), cluster.metadata.get("uid"), discovery, vms, policy
        )
    except errors.K3sDeployError as exc:
        raise DiscoverError(f"{exc} ({exc.reason})") from None


def to_json(cluster: K3sCluster, candidates: Sequence[Candidate]) -> str:
    d = cluster.spec.discovery
    body = {
        "cluster": cluster.metadata.get("name"),
        "mode": "locations" if d is not None and d.locations is not None else "tags",
        "servers": [c.to_json() for c in candidates if c.role == "server"],
        "agents": [c.to_json() for c in candidates if c.role == "agent"],
    }
    return json.dumps(body, indent=2)


def to_table(candidates: Sequence[Candidate]) -> str:
    """One table per role; a VM that cannot be adopted says why (the reason its ProxmoxVM would get)."""
    blocks: list[str] = []
    for role, title in (("server", "servers"), ("agent", "agents")):
        rows = [
            (
                c.node,
                str(c.vmid),
                c.name or "-",
                c.status,
                ";".join(c.tags) or "-",
                "yes" if c.adoptable else "no",
                c.reason or "",
            )
            for c in candidates
            if c.role == role
        ]
        if not rows:
            blocks.append(f"{title}: none")
            continue
        widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        lines = [f"{title}:"] + ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                                 for r in [COLUMNS, *rows]]  # fmt: skip
        blocks.append("\n".join(lines))
    notes = [f"{c.node}/{c.vmid}: {c.message}" for c in candidates if c.message]
    if not any(c.role == "server" for c in candidates):
        notes.append("no server VM selected: the cluster would stall with NoServersFound")
    return "\n\n".join(blocks) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"
