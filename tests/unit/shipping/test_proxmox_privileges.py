"""docs/operations.md's Proxmox role grants every privilege the operator's API calls need.

The calls are read from the proxmoxer adapter's source, their permission rules from the PVE API
schema the simulator serves (the official schema, cut down), and the role from the `pveum role add`
line of the operations guide.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

from k3s_deploy.ports.proxmox import PowerAction

ROOT = Path(__file__).resolve().parents[3]
ADAPTER = ROOT / "operator" / "k3s_deploy" / "adapters" / "proxmox.py"
SCHEMA = ROOT / "lab" / "k3s_deploy_lab" / "pvesim" / "schema.json"
DOC = ROOT / "docs" / "operations.md"
# Not part of the API schema subset: needed to attach a NIC to a bridge zone (PVE 8+).
OUTSIDE_SCHEMA = {"SDN.Use"}


def documented_role() -> set[str]:
    text = DOC.read_text().replace("\\\n", " ")
    match = re.search(r'pveum role add \S+ -privs "([^"]+)"', text)
    assert match, 'no `pveum role add ... -privs "..."` in docs/operations.md'
    return set(match.group(1).split())


def adapter_calls() -> set[tuple[str, str]]:
    """(path template, METHOD) of every proxmoxer call chain in the adapter."""
    source = ADAPTER.read_text()
    calls: set[tuple[str, str]] = set()
    chain = re.compile(r"api\.((?:[a-z_]+(?:\([^()]*\))?\.)+)(get|post|put|delete)\(")
    for m in chain.finditer(source):
        parts: list[str] = []
        for seg in re.finditer(r"([a-z_]+)(?:\(([^()]*)\))?\.", m.group(1)):
            name, arg = seg.group(1), seg.group(2)
            parts.append(name)
            if arg is None:
                continue
            arg = arg.strip()
            if arg.startswith(("'", '"')):
                parts.append(arg.strip("'\""))
            elif name == "nodes":
                parts.append("{node}")
            elif name == "qemu":
                parts.append("{vmid}")
            elif name == "tasks":
                parts.append("{upid}")
            elif name == "status" and arg == "action":
                parts.append("{action}")
            else:
                raise AssertionError(f"unknown path argument {name}({arg}) in the adapter")
        path = "/" + "/".join(parts)
        method = m.group(2).upper()
        if "{action}" in path:
            for action in typing.get_args(PowerAction):
                calls.add((path.replace("{action}", action), "POST"))
        else:
            calls.add((path, method))
    return calls


def satisfied(check: Any, role: set[str]) -> bool:
    """Evaluate a PVE permission check against a role granted on every path the operator touches."""
    if not isinstance(check, list) or not check:
        return True
    op = check[0]
    if op == "and":
        return all(satisfied(c, role) for c in check[1:])
    if op == "or":
        return any(satisfied(c, role) for c in check[1:])
    if op == "perm":
        privs = set(check[2])
        any_of = len(check) > 3 and check[3] == "any"
        return bool(privs & role) if any_of else privs <= role
    raise AssertionError(f"unknown check {check}")


def test_the_adapter_calls_are_found() -> None:
    calls = adapter_calls()
    assert ("/nodes/{node}/qemu/{vmid}/clone", "POST") in calls
    assert ("/nodes/{node}/qemu/{vmid}/status/start", "POST") in calls
    assert len(calls) >= 10


def test_the_documented_role_covers_every_call() -> None:
    schema = json.loads(SCHEMA.read_text())
    role = documented_role()
    missing = []
    for path, method in sorted(adapter_calls()):
        assert path in schema and method in schema[path], f"{method} {path} is not in the PVE API schema"
        check = schema[path][method].get("permissions", {}).get("check")
        if not satisfied(check, role):
            missing.append((method, path, check))
    assert not missing, missing


def test_every_documented_privilege_is_a_real_pve_privilege() -> None:
    schema_privs: set[str] = set()
    text = SCHEMA.read_text()
    schema_privs.update(
        re.findall(r'"((?:VM|Sys|Datastore|Pool|SDN|Permissions|Mapping)\.[A-Za-z.]+)"', text)
    )
    unknown = documented_role() - schema_privs - OUTSIDE_SCHEMA
    assert not unknown, unknown
