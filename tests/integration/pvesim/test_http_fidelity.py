"""pve-http-server's order of checks, as an independent PVE client sees it.

Authentication comes before route lookup; a body on DELETE is refused while the request is read;
the ticket cookie is URL-decoded.
"""

from __future__ import annotations

import urllib.parse

import pytest

from fixtures.pve import PveSim
from integration.pvesim.helpers import raw

pytestmark = pytest.mark.integration


def test_bad_token_on_an_unknown_path_is_401_not_501(pve_sim: PveSim) -> None:
    bad = {"Authorization": f"PVEAPIToken={pve_sim.token_id}=wrong"}
    resp = raw(pve_sim, "GET", "/no/such/path", auth=False, headers=bad)
    assert resp.status_code == 401 and resp.reason == "Authentication failed!"
    anonymous = raw(pve_sim, "GET", "/no/such/path", auth=False)
    assert anonymous.status_code == 401 and anonymous.reason == "No ticket"
    known = raw(pve_sim, "GET", "/no/such/path")
    assert known.status_code == 501 and known.reason == "Method 'GET /no/such/path' not implemented"


def test_a_body_on_delete_is_refused_before_anything_else(pve_sim: PveSim) -> None:
    resp = raw(pve_sim, "DELETE", "/nodes/pve1/qemu/110", data={"purge": "1"})
    assert resp.status_code == 501 and resp.reason == "Unexpected content for method 'DELETE'"
    anonymous = raw(pve_sim, "DELETE", "/nodes/pve1/qemu/110", auth=False, data={"purge": "1"})
    assert anonymous.status_code == 501
    # the VM is still there: nothing ran
    assert raw(pve_sim, "GET", "/nodes/pve1/qemu/110/status/current").status_code == 200


def test_a_url_encoded_ticket_cookie_is_accepted(pve_sim: PveSim) -> None:
    login = raw(pve_sim, "POST", "/access/ticket", auth=False,
                data={"username": pve_sim.username, "password": pve_sim.password})  # fmt: skip
    ticket = login.json()["data"]["ticket"]
    encoded = urllib.parse.quote(ticket, safe="")
    assert encoded != ticket
    resp = raw(pve_sim, "GET", "/nodes", auth=False, headers={"Cookie": f"PVEAuthCookie={encoded}"})
    assert resp.status_code == 200, resp.reason
    forged = urllib.parse.quote(ticket[:-4] + "AAAA", safe="")
    refused = raw(pve_sim, "GET", "/nodes", auth=False, headers={"Cookie": f"PVEAuthCookie={forged}"})
    assert refused.status_code == 401
