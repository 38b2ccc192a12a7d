"""The k3s units on a guest: what is installed there, and how ``systemctl`` answers for ``k3s`` and
``k3s-agent`` (the guests' ``systemctl`` shim posts to ``/k3s/v1/service``)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from k3s_deploy_lab.guests.k3s.artefacts import log_file
from k3s_deploy_lab.guests.sshd import RunningGuest

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.control import K3sControl


class InstallFailed(Exception):
    """The k3s service would not start; ``message`` is what K3s logs (level=fatal)."""


@dataclass
class Install:
    """K3s as installed on one guest instance."""

    role: str
    version: str
    cluster_id: str
    node_name: str
    enabled: bool = True
    flags: dict[str, Any] = dataclasses.field(default_factory=dict)  # merged, secrets redacted
    args: list[str] = dataclasses.field(default_factory=list)  # the unit's command line, read at restart
    addons: dict[str, Any] = dataclasses.field(default_factory=dict)  # auto-deploy file -> what it applied
    server_url: str | None = None  # an agent's: the URL it connected through at its last start


async def service(control: K3sControl, request: web.Request) -> web.Response:
    """The guest's ``systemctl`` for the k3s units; answers ``<exit code>\\n<output>``."""
    form = await request.post()
    guest = control._caller(form)
    action, unit = str(form.get("action", "")), str(form.get("unit", ""))
    install = control.installs.get(guest.spec.instance_id)
    mine = install is not None and unit == ("k3s" if install.role == "server" else "k3s-agent")
    active = mine and install is not None and install.enabled
    if action in ("is-active", "is-enabled"):
        word = ("active" if active else "inactive") if action == "is-active" else ("enabled" if mine else "")
        return web.Response(text=f"{0 if (active if action == 'is-active' else mine) else 3}\n{word}\n")
    if not mine:
        return web.Response(text=f"5\nFailed to {action} {unit}.service: Unit {unit}.service not found.\n")
    if action == "status":
        state = "active (running)" if active else "inactive (dead)"
        return web.Response(
            text=f"{0 if active else 3}\n* {unit}.service - Lightweight Kubernetes\n"
            f"     Loaded: loaded (/etc/systemd/system/{unit}.service; enabled)\n"
            f"     Active: {state}\n"
        )
    if action in ("start", "restart", "stop"):
        try:
            await control._set_service(guest, action != "stop")
        except InstallFailed as exc:
            return web.Response(text="1\n" + "\n".join(failed(guest, unit, str(exc))) + "\n")
        return web.Response(text="0\n")
    if action in ("enable", "disable", "daemon-reload"):
        return web.Response(text="0\n")
    return web.Response(text=f"1\nUnknown command verb {action}.\n")


def failed(guest: RunningGuest, service: str, message: str) -> list[str]:
    """How ``systemctl start`` reports a K3s that exits at once (also left in its log file)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        f"Job for {service}.service failed because the control process exited with error code.",
        f'See "systemctl status {service}.service" and "journalctl -xeu {service}.service" for details.',
        f'{guest.spec.hostname} {service}[1]: time="{stamp}" level=fatal msg="{message}"',
    ]
    log_file(guest.root, service).write_text(lines[-1] + "\n")
    return lines
