"""Which handler serves which schema path, and how a concrete request path finds its template."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from k3s_deploy_lab.pvesim.auth import Identity
from k3s_deploy_lab.pvesim.schema import load_schema

if TYPE_CHECKING:
    from k3s_deploy_lab.pvesim.sim import Sim


@dataclass
class Call:
    """One validated API call as a handler sees it."""

    sim: Sim
    ident: Identity
    params: dict[str, Any]
    method: str
    template: str

    @property
    def node(self) -> str:
        return str(self.params["node"])

    @property
    def vmid(self) -> int:
        return int(self.params["vmid"])

    def flag(self, name: str) -> bool:
        return bool(self.params.get(name, False))


@dataclass
class WithTotal:
    """A list answer that also carries PVE's top-level `total` (task logs)."""

    data: Any
    total: int


Handler = Callable[[Call], Awaitable[Any]]
ROUTES: dict[tuple[str, str], Handler] = {}


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler; the template must exist in the schema (checked at import)."""
    if method not in load_schema().get(template, {}):
        raise ValueError(f"{method} {template} is not in the PVE schema subset")

    def deco(fn: Handler) -> Handler:
        ROUTES[(method, template)] = fn
        return fn

    return deco


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


_TEMPLATES: list[tuple[str, list[str]]] = []


def match(path: str) -> tuple[str, dict[str, str]] | None:
    """Find the schema template for a concrete path (relative to /api2/json)."""
    if not _TEMPLATES:
        _TEMPLATES.extend((t, _split(t)) for t in load_schema())
    parts = _split(path)
    for template, tparts in _TEMPLATES:
        if len(tparts) != len(parts):
            continue
        found: dict[str, str] = {}
        for want, got in zip(tparts, parts, strict=True):
            if want.startswith("{"):
                found[want[1:-1]] = got
            elif want != got:
                break
        else:
            return template, found
    return None
