"""The committed CRDs and reference doc are exactly what the models generate, and the CRDs are structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_deploy.api import crdgen, reference

ROOT = Path(__file__).resolve().parents[3]


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _nodes(schema[key], f"{path}[]")


def test_committed_crds_match_the_models() -> None:
    assert crdgen.drifted_files(ROOT / "crds") == [], "run `k3s-deploy crds generate`"


def test_committed_reference_matches_the_models() -> None:
    committed = (ROOT / "docs" / "crd-reference.md").read_text(encoding="utf-8")
    assert committed == reference.render_reference(), "run `python -m k3s_deploy.api.reference`"


def test_drift_is_detected(tmp_path: Path) -> None:
    written = crdgen.write_crds(tmp_path)
    assert crdgen.drifted_files(tmp_path) == []
    written[0].write_text(written[0].read_text() + "# edited\n")
    written[1].unlink()
    assert sorted(crdgen.drifted_files(tmp_path)) == sorted(p.name for p in written)


def test_render_all_is_one_stream_of_both_crds() -> None:
    docs = list(yaml.safe_load_all(crdgen.render_all()))
    assert [d["metadata"]["name"] for d in docs] == ["k3sclusters.k3sdeploy.io", "proxmoxvms.k3sdeploy.io"]


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_described(kind: crdgen.Kind) -> None:
    version = crdgen.crd(kind)["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in _nodes(root):
        assert not {"anyOf", "oneOf", "allOf", "$ref", "title", "uniqueItems"} & node.keys(), path
        untyped = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
        assert node.get("type") or untyped, f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        if path.startswith((".spec", ".status")) and path.count(".") >= 2 and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"
        if path.startswith(".status"):
            assert "default" not in node, f"{path}: defaults in status would be written back by the apiserver"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: lists need maxItems to bound CEL cost"
    assert version["subresources"] == {"status": {}}


def test_names_follow_the_design() -> None:
    by_kind = {k.kind: crdgen.crd(k)["spec"] for k in crdgen.KINDS}
    assert by_kind["K3sCluster"]["names"]["shortNames"] == ["k3sc"]
    assert by_kind["ProxmoxVM"]["names"]["shortNames"] == ["pvm"]
    for spec in by_kind.values():
        assert spec["group"] == "k3sdeploy.io"
        assert spec["scope"] == "Namespaced"
        assert spec["names"]["categories"] == ["k3sdeploy"]
        assert spec["versions"][0]["name"] == "v1alpha1"


def test_cross_field_rules_are_in_the_schema() -> None:
    spec = crdgen.model_schema(crdgen.KINDS[0].spec, status=False)
    k3s_rules = [r["rule"] for r in spec["properties"]["k3s"]["x-kubernetes-validations"]]
    assert "has(self.version) != has(self.channel)" in k3s_rules
    server_rules = spec["properties"]["servers"]["x-kubernetes-validations"]
    assert server_rules[0]["rule"] == "self.replicas % 2 == 1"
    assert server_rules[0]["fieldPath"] == ".replicas"
