"""Error rules that model timeouts and lost replies (used by the fault campaigns in chaos/)."""

from __future__ import annotations

import time

import pytest
from proxmoxer import ResourceException

from fixtures.pve import PveSim

pytestmark = pytest.mark.integration


def test_applied_call_with_lost_reply_and_delayed_error(pve_sim: PveSim) -> None:
    api = pve_sim.api()
    pve_sim.set_faults(errors=[{"match": "PUT /nodes/{node}/qemu/{vmid}/config", "status": 504,
                                "message": "gateway timeout", "apply": True, "delay": 0.4, "remaining": 1}])  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ResourceException) as err:
        api.nodes("pve1").qemu(110).config.put(cores=3)
    assert err.value.status_code == 504 and time.monotonic() - started >= 0.4
    assert api.nodes("pve1").qemu(110).config.get()["cores"] == 3, "the change took effect"
    # without apply the call has no effect
    pve_sim.set_faults(
        errors=[{"match": "PUT /nodes/{node}/qemu/{vmid}/config", "status": 500, "remaining": 1}]
    )
    with pytest.raises(ResourceException):
        api.nodes("pve1").qemu(110).config.put(cores=4)
    assert api.nodes("pve1").qemu(110).config.get()["cores"] == 3
    api.nodes("pve1").qemu(110).config.put(cores=4)
    assert api.nodes("pve1").qemu(110).config.get()["cores"] == 4
