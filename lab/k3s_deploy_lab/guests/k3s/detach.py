"""``setsid`` on a lab guest: a process that outlives the SSH session that started it.

On a real guest ``setsid -f cmd`` starts ``cmd`` in a new session, and it keeps running after the
SSH command (and the connection) ends. A lab guest runs each SSH command in its own bubblewrap pid
namespace, which the kernel empties when that command ends, so a plain setsid'd child would die with
it. The stand-in ``setsid`` therefore hands the command to the guests process, which starts it in a
sandbox of its own for that guest (same filesystem view, same environment as an SSH command) and
kills it when the VM stops, as a power-off does. Exit status: 0 once started (``setsid -f``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from k3s_deploy_lab.guests.k3s.artefacts import write_file
from k3s_deploy_lab.guests.k3s.scripts import GUEST_TOKEN_PATH
from k3s_deploy_lab.guests.sandbox import GuestRoot
from k3s_deploy_lab.guests.sshd import RunningGuest

if TYPE_CHECKING:
    from k3s_deploy_lab.guests.k3s.control import K3sControl

SETSID_PATH = "/usr/local/sbin/setsid"
SETSID = r"""#!/bin/sh
# setsid (k3s-deploy lab guest): the command runs in a new session that outlives this SSH command;
# the lab's guests process starts it (see docs/lab-guests.md). -f/--fork is implied; -w is refused.
LAB_URL='@LAB_URL@'
while [ $# -gt 0 ]; do
  case "$1" in
    -f|--fork|-c|--ctty) shift ;;
    -w|--wait) echo "setsid: --wait is not supported on a lab guest" >&2; exit 1 ;;
    --) shift; break ;;
    -*) echo "setsid: invalid option -- '$1'" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: setsid [options] <program> [arguments ...]" >&2; exit 1; }
n=$#
for a in "$@"; do set -- "$@" --data-urlencode "arg=$a"; done
shift "$n"
curl -sSf -o /dev/null -X POST "$LAB_URL/k3s/v1/detach" --data-urlencode "guest=$(cat @GUEST_TOKEN@)" "$@" \
  || { echo "setsid: failed to execute $1" >&2; exit 1; }
"""


def install(root: GuestRoot, lab_url: str) -> None:
    """Put the stand-in setsid on a guest (at every boot, beside the systemctl shim)."""
    text = SETSID.replace("@LAB_URL@", lab_url).replace("@GUEST_TOKEN@", GUEST_TOKEN_PATH)
    write_file(root, SETSID_PATH, text, 0o755)


def route(control: K3sControl) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``/k3s/v1/detach`` handler of the guests' HTTP API."""

    async def detach(request: web.Request) -> web.Response:
        return await handle(control, request)

    return detach


async def handle(control: K3sControl, request: web.Request) -> web.Response:
    form = await request.post()
    guest = control._caller(form)
    argv = [str(a) for a in form.getall("arg", [])]
    if not argv:
        raise web.HTTPBadRequest(text="setsid: no program\n")
    await start(guest, argv)
    return web.Response(text="")


async def start(guest: RunningGuest, argv: list[str]) -> None:
    """Run ``argv`` inside ``guest``, detached from any session; it is killed when the VM stops."""
    proc = await guest.run(argv, stdio=asyncio.subprocess.DEVNULL)

    async def reap() -> None:
        with contextlib.suppress(Exception):
            await proc.wait()
        guest.processes.discard(proc)

    _tasks.add(task := asyncio.get_running_loop().create_task(reap()))
    task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()
