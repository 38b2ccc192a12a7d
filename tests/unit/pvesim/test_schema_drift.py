"""The simulator cannot drift from the PVE schema: every route and every parameter it reads is in it."""

from __future__ import annotations

import inspect
import re

from k3s_deploy_lab.pvesim import endpoints
from k3s_deploy_lab.pvesim.endpoints import load_all
from k3s_deploy_lab.pvesim.routing import ROUTES
from k3s_deploy_lab.pvesim.schema import endpoint, load_schema

READS = re.compile(r"""(?:params|p)(?:\.get\(|\[)\s*"([a-z0-9_\-]+)"|flag\("([a-z0-9_\-]+)"\)""")

# Endpoints of the schema subset the simulator leaves out on purpose (answered with 501).
NOT_SIMULATED = {
    ("POST", "/nodes/{node}/qemu"), ("GET", "/nodes/{node}/qemu/{vmid}/migrate"),
    ("POST", "/nodes/{node}/qemu/{vmid}/migrate"), ("PUT", "/nodes/{node}/qemu/{vmid}/unlink"),
    ("POST", "/nodes/{node}/status"), ("POST", "/nodes/{node}/qemu/{vmid}/agent/exec"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/file-write"),
}  # fmt: skip


def test_every_route_is_in_the_schema_and_every_schema_endpoint_is_simulated_or_listed() -> None:
    load_all()
    schema = {(m, p) for p, methods in load_schema().items() for m in methods}
    assert set(ROUTES) <= schema
    assert schema - set(ROUTES) == NOT_SIMULATED


def test_handlers_read_only_parameters_their_endpoint_defines() -> None:
    load_all()
    problems = []
    for (method, template), handler in ROUTES.items():
        module = inspect.getmodule(handler)
        assert module is not None and module.__name__.startswith(endpoints.__name__)
        source = inspect.getsource(handler)
        ep = endpoint(template, method)
        for match in READS.finditer(source):
            name = match.group(1) or match.group(2)
            if ep.prop(name) is None:
                problems.append(f"{method} {template} reads '{name}'")
    assert problems == []


def test_stripped_description_parameters_are_restored() -> None:
    assert endpoint("/nodes/{node}/qemu/{vmid}/clone", "POST").prop("description") == {
        "optional": 1,
        "type": "string",
    }
    assert endpoint("/nodes/{node}/qemu/{vmid}/config", "PUT").prop("description") is not None


def test_schema_is_the_official_shape() -> None:
    schema = load_schema()
    clone = schema["/nodes/{node}/qemu/{vmid}/clone"]["POST"]
    assert clone["parameters"]["additionalProperties"] == 0
    assert clone["permissions"]["check"][0] == "and"
    assert schema["/access/ticket"]["POST"]["allowtoken"] == 0
    assert len(schema) == 43
