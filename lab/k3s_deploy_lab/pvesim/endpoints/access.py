"""`/version` and `/access/ticket` (password login and ticket renewal)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web

from k3s_deploy_lab.pvesim import auth
from k3s_deploy_lab.pvesim.routing import Call, route

VERSION = {"version": "9.1.2", "release": "9.1", "repoid": "5d6b2a7e1f0c3b88"}


@route("GET", "/version")
async def version(call: Call) -> Any:
    return dict(VERSION)


@route("GET", "/access/ticket")
async def ticket_index(call: Call) -> Any:
    return None


@route("POST", "/access/ticket")
async def create_ticket(call: Call) -> Any:
    state = call.sim.state
    username = str(call.params["username"])
    if "realm" in call.params and "@" not in username:
        username = f"{username}@{call.params['realm']}"
    password = str(call.params["password"])
    user = state.users.get(username)
    ok = False
    if user is not None and user.enable:
        if password.startswith("PVE:"):
            ok = auth.verify_ticket(state, password) == username
        else:
            ok = hmac.compare_digest(user.password, password)
    if not ok:
        await asyncio.sleep(call.sim.seconds("authFailureDelay"))
        return web.Response(status=401, reason="authentication failure", body=b'{"data":null}',
                            headers={"Content-Type": "application/json;charset=UTF-8"})  # fmt: skip
    ticket, csrf = auth.make_ticket(state, username)
    cap = {"vms": {"VM.Audit": 1}, "nodes": {"Sys.Audit": 1}, "storage": {"Datastore.Audit": 1}}
    return {
        "username": username,
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "cap": cap,
        "clustername": "lab",
    }
