"""Render docs/crd-reference.md from the generated CRD schemas (so the reference cannot drift).

Run ``python -m k3s_deploy.api.reference docs/crd-reference.md`` after changing a model; a unit test
fails when the committed file differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from k3s_deploy.api.common import API_VERSION
from k3s_deploy.api.crdgen import KINDS, Kind, crd

TITLE = "# CRD reference\n\n"
INTRO = (
    "Generated from the pydantic models in `operator/k3s_deploy/api` "
    "(`python -m k3s_deploy.api.reference docs/crd-reference.md`). Do not edit by hand.\n\n"
    f"Both kinds are namespaced, in `{API_VERSION}`, category `k3sdeploy`. Every rule below is enforced by "
    "the apiserver (CEL `x-kubernetes-validations`) and again by the operator when it parses an object.\n"
)


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "object")
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map[string]{_type(schema['additionalProperties'])}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    for where in (schema, schema.get("items", {}), schema.get("additionalProperties", {})):
        if isinstance(where, dict) and where.get("type") == "string":
            parts.extend(f"else: {rule['message']}" for rule in where.get("x-kubernetes-validations", []))
            if "maxLength" in where:
                parts.append(f"max length {where['maxLength']}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section(path: str, schema: dict[str, Any], out: list[str]) -> None:
    """One table per object, then one section per nested object, depth first."""
    props: dict[str, Any] = schema.get("properties", {})
    out.append(f"### `{path}`\n")
    if schema.get("description"):
        out.append(_cell(schema["description"]) + "\n")
    required = set(schema.get("required", []))
    out.append("| Field | Type | Required | Constraints | Description |")
    out.append("|---|---|---|---|---|")
    nested: list[tuple[str, dict[str, Any]]] = []
    for name, sub in props.items():
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        if target.get("type") == "object" and "properties" in target:
            nested.append((f"{path}.{name}" + ("[]" if sub.get("type") == "array" else ""), target))
        out.append(
            f"| `{name}` | {_type(sub)} | {'yes' if name in required else ''} | {_cell(_constraints(sub))} "
            f"| {_cell(sub.get('description', ''))} |"
        )
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        out.append("\nRules:\n")
        out.extend(f"- `{r['rule']}`: {r['message']}" for r in rules)
    out.append("")
    for sub_path, sub_schema in nested:
        _section(sub_path, sub_schema, out)


def render_kind(kind: Kind) -> str:
    version = crd(kind)["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    out = [f"## {kind.kind} (`{kind.short_name}`)\n", root["description"] + "\n"]
    out.append(
        "Printer columns: " + ", ".join(c["name"] for c in version["additionalPrinterColumns"]) + ".\n"
    )
    _section("spec", root["properties"]["spec"], out)
    _section("status", root["properties"]["status"], out)
    return "\n".join(out)


def render_reference() -> str:
    return TITLE + INTRO + "\n" + "\n".join(render_kind(kind) for kind in KINDS)


def main(argv: list[str]) -> int:
    target = Path(argv[1] if len(argv) > 1 else "docs/crd-reference.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
