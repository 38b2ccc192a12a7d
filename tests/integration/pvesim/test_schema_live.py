"""Every simulated endpoint refuses what the schema does not define and requires what it requires."""

from __future__ import annotations

import pytest

from fixtures.pve import PveSim
from integration.pvesim.helpers import raw
from k3s_deploy_lab.pvesim.endpoints import load_all
from k3s_deploy_lab.pvesim.routing import ROUTES
from k3s_deploy_lab.pvesim.schema import endpoint

pytestmark = pytest.mark.integration

SAMPLE_PATH = {"node": "pve1", "vmid": "110", "storage": "shared",
               "upid": "UPID:pve1:00000001:00000001:00000001:qmstart:110:root@pam:"}  # fmt: skip


def _concrete(template: str) -> str:
    out = template
    for key, value in SAMPLE_PATH.items():
        out = out.replace("{" + key + "}", value)
    return out


def test_every_simulated_endpoint_follows_its_schema(pve_sim: PveSim) -> None:
    load_all()
    assert len(ROUTES) >= 40
    for method, template in sorted(ROUTES):
        ep = endpoint(template, method)
        path = _concrete(template)
        send = (
            {"params": {"zz-not-in-schema": "1"}}
            if method in ("GET", "DELETE")
            else {"data": {"zz-not-in-schema": "1"}}
        )
        resp = raw(pve_sim, method, path, **send)
        assert resp.status_code == 400, (method, template, resp.status_code, resp.reason)
        errors = resp.json()["errors"]
        assert errors["zz-not-in-schema"].startswith("property is not defined in schema"), (method, template)
        required = {
            n for n, s in ep.properties.items() if not s.get("optional") and "{" + n + "}" not in template
        }
        assert set(errors) - {"zz-not-in-schema"} == required, (method, template, errors)
