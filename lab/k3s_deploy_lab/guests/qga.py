"""The QEMU guest agent inside each lab guest, as far as the simulator needs it: reading files.

On a real VM, ``GET .../agent/file-read`` goes from Proxmox through a virtio-serial channel to
qemu-guest-agent, which opens the file inside the guest. Here the simulator forwards the call to
the guests process (``POST <httpUrl>/qga/v1/file-read``, bearer secret agreed at registration), and
the read runs inside the guest's sandbox, so it sees exactly the guest's filesystem (symlinks
resolve inside the guest, never on the host). The guests process registers this channel with the
simulator's admin endpoint (``PUT <adminUrl>/agent-channel``) whenever it (re)connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import signal
from typing import Any

from aiohttp import web

from k3s_deploy_lab.guests.fleet import GuestFleet

# Runs inside the guest: qemu-ga's guest-file-open / guest-file-read / guest-file-close, in one go.
# ``eof`` is set as qemu-ga sets it: only when a read came back shorter than asked.
_READ = r"""
import base64, json, sys
path, offset, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    f = open(path, "rb")
except OSError as e:
    print(json.dumps({"error": "failed to open file '%s' (mode: 'r'): %s" % (path, e.strerror)}))
    sys.exit(0)
with f:
    try:
        if offset:
            f.seek(offset)
        data = f.read(count)
    except OSError as e:
        print(json.dumps({"error": "failed to read file: %s" % e.strerror}))
        sys.exit(0)
print(json.dumps({"data": base64.b64encode(data).decode(), "eof": len(data) < count}))
"""
READ_TIMEOUT = 30.0


class GuestAgents:
    """Answers the simulator's forwarded agent calls for the fleet's running guests."""

    def __init__(self, fleet: GuestFleet) -> None:
        self.fleet = fleet
        self.secret = secrets.token_urlsafe(24)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/qga/v1/file-read", self._file_read)

    async def _file_read(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            return web.json_response({"error": "unknown caller"}, status=403)
        body: dict[str, Any] = await request.json()
        guest = self.fleet.running.get(int(body["vmid"]))
        if guest is None or guest.spec.instance_id != str(body.get("instanceId")):
            return web.json_response({"running": False}, status=409)
        argv = ["python3", "-c", _READ, str(body["path"]), str(int(body["offset"])), str(int(body["count"]))]
        proc = await guest.run(argv)
        try:
            out, _err = await asyncio.wait_for(proc.communicate(), READ_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return web.json_response({"running": False}, status=409)
        finally:
            guest.processes.discard(proc)
        try:
            answer = json.loads(out.decode())
        except ValueError:
            return web.json_response({"error": "guest-file-read failed"})
        return web.json_response(answer)
