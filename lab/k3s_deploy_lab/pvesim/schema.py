"""The official PVE API schema subset shipped as data, and the lookups the simulator derives from it.

Routing, permission checks and parameter validation all read this file, so the simulator cannot
accept a parameter the real API refuses (a test compares the two).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("schema.json")

# Highest index of each `name[n]` family in qemu-server (PVE 8/9).
INDEX_MAX: dict[str, int] = {
    "net": 31, "ipconfig": 31, "scsi": 30, "virtio": 15, "sata": 5, "ide": 3, "unused": 255,
    "hostpci": 15, "serial": 3, "usb": 13, "parallel": 2, "numa": 7, "virtiofs": 9,
}  # fmt: skip

_INDEXED = re.compile(r"^([a-z]+)(\d+)$")

# The shipped subset had every key named `description` stripped (doc text), which also removed the
# real *parameter* `description` of these endpoints; it is restored here as qemu-server defines it.
RESTORED: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("/nodes/{node}/qemu/{vmid}/clone", "POST"): {"description": {"optional": 1, "type": "string"}},
    ("/nodes/{node}/qemu/{vmid}/config", "POST"): {
        "description": {"maxLength": 8192, "optional": 1, "type": "string"}
    },
    ("/nodes/{node}/qemu/{vmid}/config", "PUT"): {
        "description": {"maxLength": 8192, "optional": 1, "type": "string"}
    },
    ("/nodes/{node}/qemu", "POST"): {"description": {"maxLength": 8192, "optional": 1, "type": "string"}},
}


@functools.cache
def load_schema() -> dict[str, dict[str, dict[str, Any]]]:
    data: dict[str, dict[str, dict[str, Any]]] = json.loads(SCHEMA_FILE.read_text())
    for (path, method), props in RESTORED.items():
        data[path][method]["parameters"]["properties"].update(props)
    return data


@dataclass(frozen=True)
class Endpoint:
    """One method of one schema path."""

    path: str
    method: str
    info: dict[str, Any]

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        props: dict[str, dict[str, Any]] = self.info.get("parameters", {}).get("properties", {})
        return props

    @property
    def allowtoken(self) -> bool:
        return bool(self.info.get("allowtoken", 1))

    @property
    def permissions(self) -> dict[str, Any]:
        perms: dict[str, Any] = self.info.get("permissions", {})
        return perms

    def prop(self, name: str) -> dict[str, Any] | None:
        """The schema of ``name``, resolving families such as ``net[n]`` for ``net0``."""
        found = self.properties.get(name)
        if found is not None:
            return found
        m = _INDEXED.match(name)
        if m and int(m.group(2)) <= INDEX_MAX.get(m.group(1), -1):
            return self.properties.get(f"{m.group(1)}[n]")
        return None


def endpoint(path: str, method: str) -> Endpoint:
    """The schema entry for a path template such as ``/nodes/{node}/qemu/{vmid}/config``."""
    return Endpoint(path, method, load_schema()[path][method])


def config_keys() -> list[str]:
    """Every concrete qemu config key the schema allows (families expanded)."""
    keys: list[str] = []
    props = endpoint("/nodes/{node}/qemu/{vmid}/config", "POST").properties
    for name in props:
        if name.endswith("[n]"):
            base = name[:-3]
            keys.extend(f"{base}{i}" for i in range(INDEX_MAX[base] + 1))
        else:
            keys.append(name)
    return keys
