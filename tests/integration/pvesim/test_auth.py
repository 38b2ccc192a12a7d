"""Tickets, CSRF, API tokens, privilege separation and the 401/403 shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
import yaml
from proxmoxer import AuthenticationError, ResourceException

from fixtures.pve import PveSim
from integration.pvesim.helpers import raw
from k3s_deploy_lab.pvesim.inventory import SAMPLE

pytestmark = pytest.mark.integration


def test_password_login_ticket_cookie_and_csrf(pve_sim: PveSim) -> None:
    resp = raw(pve_sim, "POST", "/access/ticket", auth=False,
               data={"username": pve_sim.username, "password": pve_sim.password})  # fmt: skip
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert data["username"] == "root@pam" and data["ticket"].startswith("PVE:root@pam:")
    stamp = data["ticket"].split(":")[2]
    assert len(stamp) == 8 and stamp == stamp.upper()
    cookies = {"PVEAuthCookie": data["ticket"]}
    ok = raw(pve_sim, "GET", "/nodes", auth=False, cookies=cookies)
    assert ok.status_code == 200
    no_csrf = raw(
        pve_sim, "PUT", "/nodes/pve1/qemu/110/config", auth=False, cookies=cookies, data={"cores": 4}
    )
    assert no_csrf.status_code == 401 and no_csrf.reason == "Permission denied - invalid csrf token"
    with_csrf = raw(pve_sim, "PUT", "/nodes/pve1/qemu/110/config", auth=False, cookies=cookies, data={"cores": 4},
                    headers={"CSRFPreventionToken": data["CSRFPreventionToken"]})  # fmt: skip
    assert with_csrf.status_code == 200 and with_csrf.json() == {"data": None}
    # proxmoxer renews by posting the ticket as the password
    renewed = raw(
        pve_sim,
        "POST",
        "/access/ticket",
        auth=False,
        data={"username": "root@pam", "password": data["ticket"]},
    )
    assert renewed.status_code == 200


def test_proxmoxer_password_auth(pve_sim: PveSim) -> None:
    api = pve_sim.api_password()
    upid = api.nodes("pve1").qemu(110).status.start.post()
    assert pve_sim.wait_task(upid, api=api)["exitstatus"] == "OK"
    with pytest.raises(AuthenticationError):
        pve_sim.api_password(password="wrong")


def test_failed_login_shape(pve_sim: PveSim) -> None:
    resp = raw(
        pve_sim, "POST", "/access/ticket", auth=False, data={"username": "root@pam", "password": "nope"}
    )
    assert resp.status_code == 401 and resp.reason == "authentication failure"
    assert resp.json() == {"data": None}


def test_no_credentials_and_bad_token(pve_sim: PveSim) -> None:
    resp = raw(pve_sim, "GET", "/nodes", auth=False)
    assert resp.status_code == 401 and resp.reason == "No ticket" and resp.content == b""
    bad = raw(
        pve_sim,
        "GET",
        "/nodes",
        auth=False,
        headers={"Authorization": f"PVEAPIToken={pve_sim.token_id}=wrong"},
    )
    assert bad.status_code == 401 and bad.reason == "Authentication failed!"
    assert bad.headers.get("Connection") == "close"
    # the ticket index is world-readable
    assert raw(pve_sim, "GET", "/access/ticket", auth=False).status_code == 200


def test_token_without_privilege_gets_the_real_403(pve_sim: PveSim) -> None:
    reader = pve_sim.api("root@pam!readonly")
    assert reader.nodes("pve1").qemu(9001).config.get()["name"] == "ubuntu-2404-cloud"
    with pytest.raises(ResourceException) as err:
        reader.nodes("pve1").qemu(9001).clone.post(newid=300)
    assert err.value.status_code == 403
    assert err.value.content == "Permission check failed (/vms/9001, VM.Clone)"
    with pytest.raises(ResourceException) as err:
        reader.nodes("pve1").qemu(110).status.start.post()
    assert err.value.content == "Permission check failed (/vms/110, VM.PowerMgmt)"


def _inventory_with(
    users: list[dict[str, Any]], tokens: list[dict[str, Any]], acls: list[dict[str, Any]]
) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    data["users"] += users
    data["tokens"] += tokens
    data["acls"] += acls
    return data


def test_privilege_separation_intersects_token_and_owner(pve_sim_factory: Callable[..., PveSim]) -> None:
    sim = pve_sim_factory(inventory=_inventory_with(
        users=[{"userid": "ops@pve"}],
        tokens=[{"id": "ops@pve!sep", "privsep": True}, {"id": "ops@pve!nosep", "privsep": False}],
        acls=[{"path": "/vms", "ugid": "ops@pve", "role": "PVEVMUser"},
              {"path": "/vms", "ugid": "ops@pve!sep", "role": "PVEVMAdmin"}],
    ))  # fmt: skip
    sep, nosep = sim.api("ops@pve!sep"), sim.api("ops@pve!nosep")
    # the owner may power VMs on (PVEVMUser), the separated token has PVEVMAdmin: intersection allows it
    assert sep.nodes("pve1").qemu(110).status.current.get()["status"] == "stopped"
    upid = sep.nodes("pve1").qemu(110).status.start.post()
    assert sim.wait_task(upid, api=sep)["exitstatus"] == "OK"
    # ... but not cloning: the owner lacks VM.Clone
    with pytest.raises(ResourceException) as err:
        sep.nodes("pve1").qemu(9001).clone.post(newid=300)
    assert (err.value.status_code, err.value.content) == (
        403,
        "Permission check failed (/vms/9001, VM.Clone)",
    )
    # a token without privilege separation has exactly its owner's rights
    assert nosep.nodes("pve1").qemu(100).status.current.get()["status"] == "running"
    with pytest.raises(ResourceException):
        nosep.nodes("pve1").qemu(9001).clone.post(newid=300)
    # and VMs it cannot audit are left out of /cluster/resources (no ACL on nodes or storage either)
    assert {r["type"] for r in sep.cluster.resources.get()} == {"qemu"}


def test_a_token_sees_only_its_own_tasks(pve_sim_factory: Callable[..., PveSim]) -> None:
    sim = pve_sim_factory(inventory=_inventory_with(
        users=[], tokens=[{"id": "root@pam!vmonly", "privsep": True}],
        acls=[{"path": "/vms", "ugid": "root@pam!vmonly", "role": "PVEVMAdmin"}],
    ))  # fmt: skip
    vmonly = sim.api("root@pam!vmonly")
    theirs = sim.api().nodes("pve1").qemu(110).status.start.post()
    mine = vmonly.nodes("pve2").qemu(101).status.reboot.post()
    assert vmonly.nodes("pve2").tasks(mine).status.get()["tokenid"] == "vmonly"
    resp = raw(sim, "GET", f"/nodes/pve1/tasks/{theirs}/status", token="root@pam!vmonly")
    assert (resp.status_code, resp.reason) == (403, "Permission check failed (/nodes/pve1, Sys.Audit)")
    listed = [t["upid"] for t in vmonly.nodes("pve2").tasks.get(source="all")]
    assert listed == [mine]
    page = raw(sim, "GET", "/nodes/pve1/tasks", params={"source": "all", "limit": 1}).json()
    assert len(page["data"]) == 1 and page["total"] >= 1
    # the operator token has Sys.Audit on / and sees both
    assert sim.api().nodes("pve2").tasks(mine).status.get()["upid"] == mine


def test_tls_is_verified_with_the_published_ca(pve_sim: PveSim) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pve_sim.api_url + "/version", timeout=10)
    assert requests.get(
        pve_sim.api_url + "/version", verify=pve_sim.ca, headers=pve_sim.token_header(), timeout=10
    ).ok
