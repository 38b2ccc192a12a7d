"""API handlers, one module per area; importing a module registers its routes."""

from __future__ import annotations

import importlib

MODULES = ("access", "cluster", "qemu", "config", "power", "clone", "cloudinit", "agent", "tasks")


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
