"""Add-ons: each one a file in the servers' auto-deploy directory, which K3s applies and cleans up.

The files the servers hold are the record: every pass that has add-ons to care about lists
``k3s-deploy-addon-*.yaml`` on each server running K3s (name and sha256), writes what is missing or
different, deletes what the spec no longer names, and reports the files in ``status.addons``. A file
name is built only from an add-on name that matched a DNS label twice (schema and here), and names
read back from a guest are checked the same way, so no write or delete can leave the directory.
Content is what the tenant wrote (they are cluster-admin in their own cluster anyway); it is checked
to be YAML objects so a typo stalls with a reason instead of failing silently inside K3s.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from k3s_deploy import errors
from k3s_deploy.api.addons import Addon, AddonStatus, ConfigMapKeyRef
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy.services.k3scluster.access import node_target
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView, raise_first

DIR = "/var/lib/rancher/k3s/server/manifests"
PREFIX = "k3s-deploy-addon-"
CONDITION = "AddonsApplied"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?")
_LISTED = re.compile(r"([0-9a-f]{64})  " + re.escape(PREFIX) + r"([a-z0-9-]{1,40})\.yaml")
LIST = (
    f'cd {DIR} 2>/dev/null || exit 0; for f in {PREFIX}*.yaml; do [ -f "$f" ] && sha256sum "$f"; done; exit 0'
)


def path_of(name: str) -> str:
    """The file of add-on ``name``; anything but a DNS label is refused (no ``/``, no ``..``)."""
    if not _NAME.fullmatch(name):
        raise errors.InvalidSpec(f"add-on name {name!r} is not a DNS label", reason="AddonInvalid")
    return f"{DIR}/{PREFIX}{name}.yaml"


def parse_listing(stdout: str) -> dict[str, str]:
    """``sha256sum`` lines of our files -> {name: hex}; any other line (hostile guest) is ignored."""
    found = {}
    for line in stdout.splitlines()[:1000]:
        m = _LISTED.fullmatch(line.strip())
        if m and _NAME.fullmatch(m.group(2)):
            found[m.group(2)] = m.group(1)
    return found


async def _config_text(r: ClusterPass, addon: str, ref: ConfigMapKeyRef, what: str) -> str:
    data = await r.deps.objects.read_config_map(r.ref.namespace, ref.name)
    if data is None:
        raise errors.InvalidSpec(
            f"add-on {addon}: ConfigMap {ref.name!r} ({what}) not found in namespace {r.ref.namespace!r}; "
            "create it or fix the name",
            reason="AddonConfigMapNotFound",
        )
    if ref.key is None and len(data) != 1:
        raise errors.InvalidSpec(
            f"add-on {addon}: ConfigMap {ref.name!r} has {len(data)} keys ({', '.join(sorted(data)) or 'none'}); "
            "name one with key",
            reason="AddonConfigMapKeyMissing",
        )
    key = ref.key if ref.key is not None else next(iter(data))
    if key not in data:
        raise errors.InvalidSpec(
            f"add-on {addon}: ConfigMap {ref.name!r} has no key {key!r} (keys: {', '.join(sorted(data)) or 'none'})",
            reason="AddonConfigMapKeyMissing",
        )
    return data[key]


def _yaml_objects(addon: str, text: str, what: str) -> list[Any]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise errors.InvalidSpec(
            f"add-on {addon}: the {what} are not valid YAML{where}", reason="AddonInvalid"
        ) from None
    if not all(isinstance(d, dict) for d in docs):
        raise errors.InvalidSpec(
            f"add-on {addon}: every YAML document of the {what} must be a mapping", reason="AddonInvalid"
        )
    return docs


def helm_chart(addon: Addon, values: str | None) -> dict[str, Any]:
    """The ``helm.cattle.io/v1`` HelmChart object of a helmChart add-on."""
    chart = addon.helm_chart
    assert chart is not None
    spec: dict[str, Any] = {
        "repo": chart.repo,
        "chart": chart.chart,
        "targetNamespace": chart.target_namespace,
        "createNamespace": chart.create_namespace,
    }
    if chart.version:
        spec["version"] = chart.version
    if values:
        spec["valuesContent"] = values
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": addon.name, "namespace": "kube-system"},
        "spec": spec,
    }


async def render(r: ClusterPass, addon: Addon) -> bytes:
    """The file content of one add-on (a missing or broken ConfigMap is a permanent error)."""
    header = f"# k3s-deploy add-on {addon.name} of K3sCluster {r.ref.namespace}/{r.ref.name}\n"
    if addon.manifests is not None:
        text = await _config_text(r, addon.name, addon.manifests.config_map_ref, "manifests")
        _yaml_objects(addon.name, text, "manifests")
        return (header + text).encode()
    chart = addon.helm_chart
    assert chart is not None
    values = None
    if chart.values_from is not None:
        values = await _config_text(r, addon.name, chart.values_from.config_map_ref, "chart values")
        if len(_yaml_objects(addon.name, values, "chart values")) > 1:
            raise errors.InvalidSpec(
                f"add-on {addon.name}: chart values must be one YAML document", reason="AddonInvalid"
            )
    return (header + yaml.safe_dump(helm_chart(addon, values), sort_keys=False)).encode()


async def sync(r: ClusterPass, private_key: str) -> None:
    """Make every server's add-on files match spec.addons; record them in status."""
    if not r.spec.addons and not r.old.addons:
        r.conditions.remove(CONDITION)
        return  # nothing written before, nothing wanted: no SSH round trip
    wanted = {a.name: await render(r, a) for a in r.spec.addons}
    servers = [v for v in r.views.values() if v.role == "server" and v.k3s_version and v.ip]
    if not servers:
        return
    results = await asyncio.gather(
        *(_sync_server(r, v, node_target(r, v, private_key), wanted) for v in servers),
        return_exceptions=True,
    )
    raise_first(results)
    changed = sorted({name for result in results if isinstance(result, set) for name in result})
    for name in changed:
        if name in wanted:
            r.event("Normal", "AddonApplied", f"Wrote add-on {name} to {len(servers)} server(s)")
        else:
            r.event("Normal", "AddonRemoved", f"Removed add-on {name}: K3s deletes its objects")
    r.status.addons = [
        AddonStatus(name=name, digest="sha256:" + hashlib.sha256(content).hexdigest())
        for name, content in sorted(wanted.items())
    ]
    r.conditions.set(CONDITION, True, "Applied", f"{len(wanted)} add-on(s) on {len(servers)} server(s)")


async def _sync_server(
    r: ClusterPass, view: NodeView, target: SshTarget, wanted: Mapping[str, bytes]
) -> set[str]:
    timeout = float(r.spec.ssh.command_timeout_seconds)
    listed = await r.deps.ssh.run(target, LIST, timeout_s=timeout, check=True)
    present = parse_listing(listed.stdout)
    changed: set[str] = set()
    for name, content in wanted.items():
        if present.get(name) == hashlib.sha256(content).hexdigest():
            continue
        with tempfile.TemporaryDirectory(prefix="k3sd-addon-") as tmp:
            local = Path(tmp) / "addon.yaml"
            await asyncio.to_thread(local.write_bytes, content)
            await r.deps.ssh.upload(target, local, path_of(name), mode=0o600, timeout_s=timeout)
        changed.add(name)
    for name in sorted(set(present) - set(wanted)):
        await r.deps.ssh.run(target, f"rm -f -- {path_of(name)}", timeout_s=timeout, check=True)
        changed.add(name)
    return changed
