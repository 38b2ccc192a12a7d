"""Generate the CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 subset: no ``$ref``,
no ``anyOf`` for nullable fields, no ``additionalProperties: false``, a ``type`` on every node.
:func:`structural` rewrites one into the other and refuses anything it cannot express, so a model
change that the apiserver would reject fails here, at generation time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from k3s_deploy.api.common import GROUP, VERSION
from k3s_deploy.api.k3scluster import K3sClusterSpec, K3sClusterStatus
from k3s_deploy.api.proxmoxvm import ProxmoxVMSpec, ProxmoxVMStatus

CATEGORY = "k3sdeploy"
HEADER = (
    "# Generated from the pydantic models in k3s_deploy/api by `k3s-deploy crds generate`. Do not edit.\n"
)

_DROP_KEYS = {"title", "$defs"}
_FORBIDDEN_KEYS = {"anyOf", "oneOf", "allOf", "not", "$ref", "const", "uniqueItems", "patternProperties"}
_READY = '.status.conditions[?(@.type=="Ready")]'


@dataclass(frozen=True)
class Kind:
    """One CRD: its names, models and printer columns."""

    kind: str
    plural: str
    short_name: str
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: tuple[dict[str, Any], ...]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        return f"{GROUP}_{self.plural}.yaml"


def _col(
    name: str, path: str, type_: str = "string", priority: int = 0, description: str = ""
) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


KINDS: tuple[Kind, ...] = (
    Kind(
        kind="K3sCluster",
        plural="k3sclusters",
        short_name="k3sc",
        spec=K3sClusterSpec,
        status=K3sClusterStatus,
        description="A K3s cluster on Proxmox VE virtual machines, cloned from templates or discovered.",
        columns=(
            _col("Phase", ".status.phase", description="Display-only summary; conditions are authoritative."),
            _col("Servers", ".status.readyServers", "integer", description="Servers Ready."),
            _col("Agents", ".status.readyAgents", "integer", description="Agents Ready."),
            _col("Version", ".status.k3sVersion", description="Lowest K3s version across nodes."),
            _col("Endpoint", ".status.serverURL", description="URL of the cluster's API."),
            _col("Ready", f"{_READY}.status"),
            _col("Age", ".metadata.creationTimestamp", "date"),
            _col("Available", ".status.availableVersion", priority=1, description="Newest in the channel."),
            _col(
                "Init", ".status.initServer", priority=1, description="Server that initialised the cluster."
            ),
            _col("Reason", f"{_READY}.reason", priority=1),
            _col("Pools", ".status.poolSummary", priority=1, description="Agent pools: name ready/replicas."),
        ),
    ),
    Kind(
        kind="ProxmoxVM",
        plural="proxmoxvms",
        short_name="pvm",
        spec=ProxmoxVMSpec,
        status=ProxmoxVMStatus,
        description="A Proxmox VE virtual machine: adopted or cloned, configured through cloud-init, powered.",
        columns=(
            _col("Node", ".status.node", description="Proxmox node."),
            _col("VMID", ".status.vmid", "integer"),
            _col("Power", ".status.powerState"),
            _col("IP", ".status.addresses[0]", description="First address the guest agent reports."),
            _col("Ready", f"{_READY}.status"),
            _col("Reason", f"{_READY}.reason", description="Why it is (not) Ready."),
            _col("Age", ".metadata.creationTimestamp", "date"),
            _col("Name", ".status.name", priority=1, description="VM name in Proxmox."),
        ),
    ),
)

_KOPF_STATUS = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "description": "Bookkeeping of the kopf framework the operator runs on (handler progress).",
}


class SchemaError(ValueError):
    """The models use something a structural CRD schema cannot express."""


def _merge_description(outer: str | None, inner: str | None) -> str | None:
    if outer and inner and outer != inner:
        return f"{outer}\n\n{inner}"
    return outer or inner


def structural(node: Any, defs: dict[str, Any], *, status: bool, path: str = "") -> Any:
    """Rewrite a pydantic JSON schema node into a structural OpenAPI v3 node (recursively)."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        description = _merge_description(node.pop("description", None), target.get("description"))
        node = target | node
        if description:
            node["description"] = description
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if len(options) != 1:
            raise SchemaError(f"{path or '<root>'}: unions are not structural; model it as separate fields")
        inner = structural(options[0], defs, status=status, path=path)
        if node.get("default", 0) is None:
            del node["default"]
        description = _merge_description(node.pop("description", None), inner.get("description"))
        node = inner | node
        if description:
            node["description"] = description
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or value is None:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "default" and status:
            continue
        if key in _FORBIDDEN_KEYS:
            raise SchemaError(f"{path or '<root>'}: {key} is not allowed in a structural schema")
        if key == "properties":
            out[key] = {
                name: structural(sub, defs, status=status, path=f"{path}.{name}")
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties"):
            out[key] = structural(value, defs, status=status, path=f"{path}[]")
        else:
            out[key] = value
    untyped = out.get("x-kubernetes-preserve-unknown-fields") or out.get("x-kubernetes-int-or-string")
    if "type" not in out and not untyped:
        raise SchemaError(f"{path or '<root>'}: no type")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        raise SchemaError(f"{path}: properties and additionalProperties together")
    return out


def model_schema(model: type[BaseModel], *, status: bool) -> dict[str, Any]:
    """The structural schema of one model (spec or status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = structural(
        raw, raw.get("$defs", {}), status=status, path=".status" if status else ".spec"
    )
    return schema


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition object of one kind."""
    spec = model_schema(kind.spec, status=False)
    status = model_schema(kind.status, status=True)
    status.setdefault("properties", {})["kopf"] = dict(_KOPF_STATUS)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "k3sdeploy.io/v1alpha1"},
                                "kind": {"type": "string", "description": kind.kind},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    """One CRD as YAML text, exactly as written to crds/."""
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=True, width=100, allow_unicode=True)


def render_all() -> str:
    """Every CRD as one YAML stream (for ``kubectl apply -f -``)."""
    return "---\n".join(render(kind) for kind in KINDS)


def write_crds(out: Path) -> list[Path]:
    """Write one file per CRD into ``out`` and return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in KINDS:
        path = out / kind.file_name
        path.write_text(render(kind), encoding="utf-8")
        paths.append(path)
    return paths


def drifted_files(directory: Path) -> list[str]:
    """Names of the CRD files in ``directory`` that are missing or differ from the models."""
    drift = []
    for kind in KINDS:
        path = directory / kind.file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(kind):
            drift.append(kind.file_name)
    return drift
