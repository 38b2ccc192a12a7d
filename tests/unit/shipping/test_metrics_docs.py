"""docs/metrics.md against the code: every documented metric is registered with the documented labels,
every registered metric is documented, and every one has a recording function that operator code
really calls (a metric nobody records would sit at zero forever while the docs promise it). The SSH
operation names the docs list are exactly the ones the code records."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from k3s_deploy import metrics

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "metrics.md"
PACKAGE = ROOT / "operator" / "k3s_deploy"
SOURCE = PACKAGE / "metrics.py"


def documented() -> dict[str, set[str]]:
    """Metric name (counters without ``_total``) -> documented labels, from the table."""
    out: dict[str, set[str]] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*`(k3sdeploy_\w+)`\s*\|[^|]*\|([^|]*)\|", line)
        if m:
            out[m.group(1).removesuffix("_total")] = set(re.findall(r"`(\w+)`", m.group(2)))
    return out


def collectors() -> dict[str, tuple[str, set[str]]]:
    """Module variable -> (metric family name, label names), for every k3sdeploy_ collector."""
    out = {}
    for var, obj in vars(metrics).items():
        if hasattr(obj, "describe") and hasattr(obj, "_labelnames"):
            family = obj.describe()[0].name
            if family.startswith("k3sdeploy_"):
                out[var] = (family, set(obj._labelnames))
    return out


def recorders() -> dict[str, set[str]]:
    """Collector variable -> public functions of metrics.py that record on it (directly or through
    helpers, classes and module-level instances)."""
    tree = ast.parse(SOURCE.read_text())
    uses: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            uses[node.name] = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(func, ast.Name) and func.id in uses:
                    uses[target.id] = {func.id}  # an instance of a class defined here
    coll = collectors()

    def reaches(name: str, seen: set[str]) -> set[str]:
        found = uses.get(name, set()) & set(coll)
        for other in uses.get(name, set()) - seen:
            if other in uses:
                found |= reaches(other, seen | {other})
        return found

    out: dict[str, set[str]] = {var: set() for var in coll}
    for name in uses:
        if not name.startswith("_"):
            for var in reaches(name, {name}):
                out[var].add(name)
    return out


def _operator_modules() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text()))
        for path in PACKAGE.rglob("*.py")
        if path != SOURCE and "lab" not in path.relative_to(PACKAGE).parts
    ]


def _metrics_names(tree: ast.Module) -> dict[ast.AST, str]:
    """Every reference to a function of k3s_deploy.metrics in a module: ``metrics.f`` or an imported ``f``."""
    imported = {
        alias.asname or alias.name: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "k3s_deploy.metrics"
        for alias in node.names
    }
    out: dict[ast.AST, str] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "metrics"
        ):
            out[node] = node.attr
        elif isinstance(node, ast.Name) and node.id in imported:
            out[node] = imported[node.id]
    return out


def used_by_operator_code() -> set[str]:
    """Functions of k3s_deploy.metrics that operator code (outside metrics.py and lab/) calls or hands
    on (a requests hook is passed, not called)."""
    return {name for _, tree in _operator_modules() for name in _metrics_names(tree).values()}


def calls_of(function: str) -> list[ast.Call]:
    calls = []
    for _, tree in _operator_modules():
        names = _metrics_names(tree)
        calls += [n for n in ast.walk(tree) if isinstance(n, ast.Call) and names.get(n.func) == function]
    return calls


def test_documented_and_registered_metrics_are_the_same_with_the_same_labels() -> None:
    docs = documented()
    registered = dict(collectors().values())
    assert docs, "no metric table found in docs/metrics.md"
    assert set(docs) == set(registered), set(docs) ^ set(registered)
    for name, labels in docs.items():
        assert labels == registered[name], (name, labels, registered[name])
        assert any(m.name == name for m in metrics.REGISTRY.collect()), name


def test_every_documented_metric_is_recorded_by_operator_code() -> None:
    used_names = used_by_operator_code()
    coll = collectors()
    for var, functions in recorders().items():
        used = sorted(f for f in functions if f in used_names)
        assert used, f"{coll[var][0]} is documented but nothing in operator code records it ({functions})"


def test_ssh_operations_documented_are_the_ones_recorded() -> None:
    operations = set(typing.get_args(metrics.SshOperation))
    doc = DOC.read_text()
    listed = set(re.findall(r"`(\w+)`", doc.split("SSH operations:", 1)[1].split("\n\n", 1)[0]))
    assert listed == operations
    recorded: set[str] = set()
    for function in ("time_ssh", "observe_ssh"):
        for call in calls_of(function):
            if call.args and isinstance(call.args[0], ast.Constant):
                recorded.add(str(call.args[0].value))
    # helpers that pass an operation on: `operation="..."` arguments and parameter defaults
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "operation"
                and isinstance(node.value, ast.Constant)
            ):
                recorded.add(str(node.value.value))
            # node actions name theirs as a class attribute, recorded by node_ops as `action.metric`
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == "metric"
                and isinstance(node.value, ast.Constant)
            ):
                recorded.add(str(node.value.value))
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                params = node.args.kwonlyargs
                for param, default in zip(params, node.args.kw_defaults, strict=True):
                    if param.arg == "operation" and isinstance(default, ast.Constant):
                        recorded.add(str(default.value))
    assert recorded == operations, operations ^ recorded
