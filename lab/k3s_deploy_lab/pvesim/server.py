"""Run the simulator: load state (or the inventory), serve HTTPS, write DIR/pve.json, save on exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web

from k3s_deploy_lab.pvesim import persistence, tls
from k3s_deploy_lab.pvesim.app import build_app
from k3s_deploy_lab.pvesim.inventory import load_inventory
from k3s_deploy_lab.pvesim.sim import Sim

OPERATOR_TOKEN_HINT = "operator"


def _published(sim: Sim, url: str, ca: Path, fingerprint: str, pid: int) -> dict[str, Any]:
    state = sim.state
    token = next((t for t in state.tokens.values() if OPERATOR_TOKEN_HINT in t.full_id), None)
    token = token or next(iter(state.tokens.values()), None)
    tokens = {t.full_id: t.secret for t in state.tokens.values()}
    return {
        "url": url,
        "host": url.split("//", 1)[1].rsplit(":", 1)[0],
        "port": int(url.rsplit(":", 1)[1]),
        "caCert": str(ca),
        "fingerprint": fingerprint,
        "tokenId": token.full_id if token else None,
        "tokenSecret": token.secret if token else None,
        "tokens": tokens,
        "username": "root@pam",
        "password": state.users["root@pam"].password if "root@pam" in state.users else None,
        "adminUrl": f"{url}/_admin/{state.admin_token}",
        "dhcpRange": state.dhcp_range,  # where guests get addresses (a free one serves as a VIP)
        "pid": pid,
    }


def _prepare(inventory: Path, state_file: Path, directory: Path, host: str) -> tuple[Sim, Path, Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    state = persistence.load(state_file) or load_inventory(inventory)
    ca, cert, key = tls.ensure_certs(directory / "tls", host)
    return Sim(state, state_file), ca, cert, key


def _publish(directory: Path, data: dict[str, Any]) -> None:
    out = directory / "pve.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.chmod(0o600)
    os.replace(tmp, out)


async def serve(
    inventory: Path, state_file: Path, directory: Path, host: str, port: int, *, scale: float | None = None
) -> None:
    sim, ca, cert, key = _prepare(inventory, state_file, directory, host)
    if scale is not None:
        sim.state.timing["scale"] = scale
    sim.start()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(build_app(sim), access_log=None, handle_signals=False)
    await runner.setup()
    # A stop need not wait for requests still in flight (aiohttp's default grace is 60 s; a guest-agent
    # call can wait on a guest that is already gone): the state is flushed before, and a client sees
    # a closed connection, as when a real node goes away.
    site = web.TCPSite(runner, host, port, ssl_context=ctx, backlog=512, shutdown_timeout=1.0)
    await site.start()
    server = site._server
    assert server is not None and isinstance(server, asyncio.base_events.Server)
    bound = server.sockets[0].getsockname()[1]
    url = f"https://{host}:{bound}"
    sim.flush()
    _publish(directory, _published(sim, url, ca, tls.fingerprint(cert), os.getpid()))
    print(f"pvesim listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        sim.flush()
        await runner.cleanup()
