"""K3s's deploy controller for the stand-in: files in a server's auto-deploy directory become objects.

Every running server's ``/var/lib/rancher/k3s/server/manifests/*.{yaml,yml,json}`` is applied to the
cluster's real kube-apiserver with the real kubectl (``<file>.skip`` beside a file skips it, as in
K3s) and tracked by an ``Addon`` (``k3s.cattle.io/v1``, namespace ``kube-system``, named after the
file) whose ``spec.source``/``spec.checksum`` say what was applied. A changed file is applied again and
the objects it no longer holds are deleted; a removed file deletes its objects and its Addon. K3s's
CRDs (Addon, HelmChart, HelmChartConfig, ETCDSnapshotFile) are installed, so ``HelmChart`` objects are
stored; no helm controller runs, so no chart is installed. Files are checked every
``POLL_SECONDS`` (K3s watches the directory).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from k3s_deploy_lab.guests.k3s.datastore import confined
from k3s_deploy_lab.guests.k3s.poller import ClusterPoller
from k3s_deploy_lab.guests.k3s.proxy import API_PORT

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.cluster import LabCluster
    from k3s_deploy_lab.guests.k3s.control import K3sControl

MANIFESTS = "/var/lib/rancher/k3s/server/manifests"
POLL_SECONDS = 2.0
SUFFIXES = (".yaml", ".yml", ".json")
CRDS = (  # (group, kind, plural, scope)
    ("k3s.cattle.io", "Addon", "addons", "Namespaced"),
    ("k3s.cattle.io", "ETCDSnapshotFile", "etcdsnapshotfiles", "Cluster"),
    ("helm.cattle.io", "HelmChart", "helmcharts", "Namespaced"),
    ("helm.cattle.io", "HelmChartConfig", "helmchartconfigs", "Namespaced"),
)


def crd_documents() -> list[dict[str, Any]]:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "names": {
                    "kind": kind,
                    "plural": plural,
                    "singular": kind.lower(),
                    "listKind": f"{kind}List",
                },
                "scope": scope,
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": schema}],
            },
        }
        for group, kind, plural, scope in CRDS
    ]


class DeployController(ClusterPoller):
    """Applies the servers' auto-deploy manifests; one instance serves every cluster of the lab."""

    poll_seconds = POLL_SECONDS
    what = "k3s deploy controller"

    def __init__(self, control: K3sControl) -> None:
        super().__init__(control)
        self._crds: set[str] = set()  # cluster ids whose CRDs are in place

    async def sync(self, cluster: LabCluster) -> None:
        running = {g.spec.instance_id: g for g in self.control.fleet.running.values()}
        for instance, install in list(self.control.installs.items()):
            guest = running.get(instance)
            node = cluster.nodes.get(instance)
            if install.cluster_id != cluster.id or install.role != "server" or guest is None:
                continue
            if not install.enabled or node is None or not node.running:
                continue
            if cluster.id not in self._crds:
                await self._kubectl(cluster, ["apply", "-f", "-"], _dump(crd_documents()))
                await self._kubectl(
                    cluster, ["wait", "--for=condition=established", "--timeout=30s", "crd", "--all"]
                )
                self._crds.add(cluster.id)
            found = self._files(confined(guest.root, MANIFESTS))
            for name, (path, checksum, text) in found.items():
                if install.addons.get(name, {}).get("checksum") != checksum:
                    install.addons[name] = await self._apply(
                        cluster, name, path, checksum, text, install.addons.get(name)
                    )
                    self.control.save()
            for name in [n for n in install.addons if n not in found]:
                await self._delete(cluster, name, install.addons.pop(name))
                self.control.save()

    @staticmethod
    def _files(host_dir: Path) -> dict[str, tuple[Path, str, str]]:
        if not host_dir.is_dir():
            return {}
        base = host_dir.resolve()
        out: dict[str, tuple[Path, str, str]] = {}
        for path in sorted(host_dir.iterdir()):
            real = path.resolve()
            if path.suffix not in SUFFIXES or base not in real.parents or not real.is_file():
                continue  # a symlink out of the guest's tree is never read
            if path.with_name(path.name + ".skip").exists():
                continue
            data = real.read_bytes()
            out[path.stem] = (real, hashlib.sha256(data).hexdigest(), data.decode(errors="replace"))
        return out

    async def _apply(
        self,
        cluster: LabCluster,
        name: str,
        path: Path,
        checksum: str,
        text: str,
        before: dict[str, Any] | None,
    ) -> dict[str, Any]:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d]
        for doc in docs:
            meta = doc.setdefault("metadata", {})
            meta.setdefault("annotations", {}).update(
                {
                    "objectset.rio.cattle.io/owner-gvk": "k3s.cattle.io/v1, Kind=Addon",
                    "objectset.rio.cattle.io/owner-name": name,
                    "objectset.rio.cattle.io/owner-namespace": "kube-system",
                }
            )
        out = await self._kubectl(cluster, ["apply", "-o", "json", "-f", "-"], _dump(docs)) if docs else "{}"
        result = json.loads(out or "{}")
        items = result.get("items", [result]) if result.get("kind") == "List" else [result]
        refs = [_ref(item) for item in items if item.get("kind")]
        for gone in [r for r in (before or {}).get("objects", []) if r not in refs]:
            await self._delete_ref(cluster, gone)
        addon = {
            "apiVersion": "k3s.cattle.io/v1",
            "kind": "Addon",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"source": f"{MANIFESTS}/{path.name}", "checksum": checksum},
            "status": {"gvks": sorted({f"{r['apiVersion']}, Kind={r['kind']}" for r in refs})},
        }
        await self._kubectl(cluster, ["apply", "-f", "-"], _dump([addon]))
        self.control.log(f"k3s deploy: applied {path.name} ({len(refs)} object(s)) in cluster {cluster.id}")
        return {"checksum": checksum, "objects": refs}

    async def _delete(self, cluster: LabCluster, name: str, record: dict[str, Any]) -> None:
        for ref in record.get("objects", []):
            await self._delete_ref(cluster, ref)
        await self._kubectl(
            cluster, ["delete", "--ignore-not-found", "-n", "kube-system", "addons.k3s.cattle.io", name]
        )
        self.control.log(f"k3s deploy: removed addon {name} in cluster {cluster.id}")

    async def _delete_ref(self, cluster: LabCluster, ref: dict[str, str]) -> None:
        meta: dict[str, str] = {"name": ref["name"]}
        if ref.get("namespace"):
            meta["namespace"] = ref["namespace"]
        doc = {"apiVersion": ref["apiVersion"], "kind": ref["kind"], "metadata": meta}
        await self._kubectl(
            cluster, ["delete", "--ignore-not-found", "--wait=false", "-f", "-"], _dump([doc])
        )

    async def _kubectl(self, cluster: LabCluster, args: list[str], stdin: str = "") -> str:
        kubectl = self.control.kubectl
        if kubectl is None:
            raise RuntimeError("kubectl is not built (k3s-deploy lab build)")
        kubeconfig = cluster.data_dir / "deploy.kubeconfig"
        text = cluster.k3s_yaml().replace(f"https://127.0.0.1:{API_PORT}", cluster.url)
        if not kubeconfig.exists() or kubeconfig.read_text() != text:  # the port moves at a restart
            fd = os.open(kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        with tempfile.TemporaryDirectory() as cache:
            proc = await asyncio.create_subprocess_exec(
                kubectl,
                "--kubeconfig",
                str(kubeconfig),
                "--cache-dir",
                cache,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate(stdin.encode())
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {args[0]}: {err.decode(errors='replace').strip()[-500:]}")
        return out.decode()


def _ref(item: dict[str, Any]) -> dict[str, str]:
    meta = item.get("metadata", {})
    ref = {
        "apiVersion": str(item["apiVersion"]),
        "kind": str(item["kind"]),
        "name": str(meta.get("name", "")),
    }
    if meta.get("namespace"):
        ref["namespace"] = str(meta["namespace"])
    return ref


def _dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
