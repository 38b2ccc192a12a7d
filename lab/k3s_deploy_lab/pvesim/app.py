"""The aiohttp application: `/api2/json` with PVE's pipeline (auth, faults, validation, permissions).

Order as in pve-http-server: a body on a method other than POST/PUT (501, while reading the request),
authentication (401; only `/access/domains` and `/access/ticket` are open), CSRF, route lookup (501),
API-token allowance, node proxy (595 when offline), parameter verification (400), permission check
(403), handler.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

from aiohttp import web

from k3s_deploy_lab.pvesim import admin, auth
from k3s_deploy_lab.pvesim.apierror import ApiError
from k3s_deploy_lab.pvesim.endpoints import load_all
from k3s_deploy_lab.pvesim.routing import ROUTES, Call, WithTotal, match
from k3s_deploy_lab.pvesim.schema import endpoint
from k3s_deploy_lab.pvesim.sim import Sim
from k3s_deploy_lab.pvesim.validation import validate

PREFIX = "/api2/json"
JSON_TYPE = "application/json;charset=UTF-8"
SIM_KEY = web.AppKey("sim", Sim)


def _reason(message: str) -> str:
    return message.split("\n", 1)[0].replace("\r", " ")[:200]


def error_response(err: ApiError) -> web.Response:
    body: dict[str, Any] = {"data": None, "message": err.message.rstrip("\n") + "\n"}
    if err.errors:
        body["errors"] = err.errors
    return web.Response(status=err.status, reason=_reason(err.message), body=json.dumps(body),
                        headers={"Content-Type": JSON_TYPE})  # fmt: skip


def _auth_failure(reason: str) -> web.Response:
    return web.Response(status=401, reason=reason, headers={"Connection": "close"})


# The only calls pve-http-server answers without credentials (PVE::HTTPServer::auth_handler).
OPEN_CALLS = {("GET", "/access/domains"), ("GET", "/access/ticket"), ("POST", "/access/ticket")}


def ok_response(data: Any, extra: dict[str, Any] | None = None) -> web.Response:
    return web.Response(status=200, body=json.dumps({"data": data, **(extra or {})}),
                        headers={"Content-Type": JSON_TYPE})  # fmt: skip


async def _params(request: web.Request, path_params: dict[str, str]) -> dict[str, Any]:
    """Query and body merged; repeated keys become lists; path parameters win."""
    merged: dict[str, Any] = {}

    def add(key: str, value: Any) -> None:
        if key in merged:
            prev = merged[key]
            merged[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            merged[key] = value

    for key, value in request.query.items():
        add(key, value)
    if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
        raw = await request.read()
        ctype = request.content_type
        if ctype == "application/json" and raw:
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "malformed JSON body") from None
            if isinstance(body, dict):
                for key, value in body.items():
                    add(key, value)
        elif raw:
            for key, value in urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
                add(key, value)
    merged.update({k: urllib.parse.unquote(v) for k, v in path_params.items()})
    return merged


async def _authenticate(sim: Sim, request: web.Request) -> auth.Identity | web.Response:
    """The identity behind a token or ticket; PVE delays every unauthorised answer by ~3 s."""
    result = _identify(sim, request)
    if isinstance(result, str):
        await asyncio.sleep(sim.seconds("authFailureDelay"))
        return _auth_failure(result)
    return result


def _identify(sim: Sim, request: web.Request) -> auth.Identity | str:
    header = request.headers.get("Authorization", "")
    # PVE URL-decodes the cookie (browsers and some clients send ':' and '=' percent-encoded)
    ticket = urllib.parse.unquote(request.cookies.get("PVEAuthCookie") or "")
    if header.startswith("PVEAPIToken="):
        ident = auth.verify_token_header(sim.state, header)
        return ident if ident is not None else "Authentication failed!"
    if ticket:
        user = auth.verify_ticket(sim.state, ticket)
        if user is None:
            return "Authentication failed!"
        if request.method != "GET":
            csrf = request.headers.get("CSRFPreventionToken", "")
            if not auth.verify_csrf(sim.state, csrf, user):
                return "Permission denied - invalid csrf token"
        return auth.Identity(user)
    return "No ticket"


async def api(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    method = request.method
    rel = request.path[len(PREFIX) :] or "/"
    found = match(rel)
    handler = ROUTES.get((method, found[0])) if found else None
    key = f"{method} {found[0] if found else rel}"
    response = await _serve(sim, request, method, rel, found, handler, key)
    sim.counts.record(key, response.status)
    return response


async def _serve(sim: Sim, request: web.Request, method: str, rel: str,
                 found: tuple[str, dict[str, str]] | None, handler: Any, key: str) -> web.StreamResponse:  # fmt: skip
    if method not in ("POST", "PUT") and (request.content_length or 0) > 0:
        message = f"Unexpected content for method '{method}'"
        return web.Response(status=501, reason=message, headers={"Connection": "close"})
    ident: auth.Identity | None = None
    if (method, rel.rstrip("/") or "/") not in OPEN_CALLS:
        result = await _authenticate(sim, request)
        if isinstance(result, web.Response):
            return result
        ident = result
    if found is None or handler is None:
        return error_response(ApiError(501, f"Method '{method} {rel}' not implemented"))
    template, path_params = found
    ep = endpoint(template, method)
    delay = sim.faults.delay_for(key)
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        if ident is not None and ident.tokenid and not ep.allowtoken:
            raise ApiError(403, "Permission check failed (API token not allowed here, need proper ticket.)")
        if "node" in path_params:
            sim.node_check(urllib.parse.unquote(path_params["node"]))
        rule = sim.faults.error_for(key)
        if rule is not None and not rule.apply:
            await asyncio.sleep(rule.delay)
            raise ApiError(rule.status, rule.message)
        params = validate(ep, await _params(request, path_params))
        if ident is not None:
            _check_permissions(sim, ep.permissions, ident, params)
        call = Call(sim, ident or auth.Identity(""), params, method, template)
        data = await handler(call)
        if rule is not None:  # the call took effect, its answer is lost (e.g. a proxy timed out)
            await asyncio.sleep(rule.delay)
            raise ApiError(rule.status, rule.message)
    except ApiError as err:
        return error_response(err)
    if isinstance(data, web.Response):
        return data
    if isinstance(data, WithTotal):
        return ok_response(data.data, {"total": data.total})
    return ok_response(data)


def _check_permissions(sim: Sim, perms: dict[str, Any], ident: auth.Identity, params: dict[str, Any]) -> None:
    check = perms.get("check")
    if not check:
        return
    allowed, text = auth.check_expr(sim.state, ident, check, params)
    if not allowed:
        raise ApiError(403, f"Permission check failed ({text})")


async def not_implemented(request: web.Request) -> web.Response:
    return error_response(ApiError(501, f"Method '{request.method} {request.path}' not implemented"))


def build_app(sim: Sim) -> web.Application:
    load_all()
    app = web.Application(client_max_size=8 * 1024**2)
    app[SIM_KEY] = sim
    app.router.add_route("*", PREFIX + "/{tail:.*}", api)
    admin.add_routes(app, sim)
    app.router.add_route("*", "/{tail:.*}", not_implemented)
    return app
