"""The admin endpoint (outside /api2/json): guests for the lab, faults, timing, counts.

It lives at `/_admin/<admin token>/...` on the same loopback server; the token in the path is the
capability (published as `adminUrl` in pve.json), so lab tools need no extra header.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from k3s_deploy_lab.pvesim.faults import Faults
from k3s_deploy_lab.pvesim.qga import AgentChannel

if TYPE_CHECKING:
    from k3s_deploy_lab.pvesim.sim import Sim

MAX_WAIT = 300.0


def add_routes(app: web.Application, sim: Sim) -> None:
    def guard(handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if not hmac.compare_digest(request.match_info["token"], sim.state.admin_token):
                return web.json_response({"error": "unknown admin path"}, status=404)
            try:
                result: web.StreamResponse = await handler(request)
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
            return result

        return wrapped

    async def guests(request: web.Request) -> web.StreamResponse:
        since = request.query.get("since")
        wait = min(float(request.query.get("wait", "0")), MAX_WAIT)
        if since is not None and wait > 0:
            await sim.wait_revision(int(since), wait)
        body = {"revision": sim.state.revision, "guests": [sim.guest(vm) for vm in sim.state.vms.values()
                                                            if not vm.template]}  # fmt: skip
        return web.json_response(body)

    async def counts(request: web.Request) -> web.StreamResponse:
        return web.json_response(sim.counts.to_json())

    async def counts_reset(request: web.Request) -> web.StreamResponse:
        sim.counts.reset()
        return web.json_response(sim.counts.to_json())

    async def faults_get(request: web.Request) -> web.StreamResponse:
        return web.json_response(sim.faults.to_json())

    async def faults_put(request: web.Request) -> web.StreamResponse:
        sim.faults.update(await request.json())
        return web.json_response(sim.faults.to_json())

    async def faults_reset(request: web.Request) -> web.StreamResponse:
        sim.faults = Faults()
        return web.json_response(sim.faults.to_json())

    async def timing_get(request: web.Request) -> web.StreamResponse:
        return web.json_response(sim.state.timing)

    async def timing_put(request: web.Request) -> web.StreamResponse:
        data = await request.json()
        for key, value in data.items():
            if key == "tasks":
                sim.state.timing["tasks"].update({k: float(v) for k, v in value.items()})
            elif key in sim.state.timing:
                sim.state.timing[key] = float(value)
            else:
                raise KeyError(f"unknown timing key {key!r}")
        sim.changed()
        return web.json_response(sim.state.timing)

    async def node_power(request: web.Request) -> web.StreamResponse:
        node = sim.state.nodes[request.match_info["node"]]
        node.online = request.match_info["action"] == "online"
        sim.changed(guest=True)
        return web.json_response({"node": node.name, "online": node.online})

    async def vm_lock(request: web.Request) -> web.StreamResponse:
        """Hold a config lock (e.g. `backup`) for a while: lock contention as other tools cause it.

        Like a real vzdump or snapshot, taking a lock fails (409) while the VM holds another one: a
        `backup` lock must never replace a `clone` lock (the clone's rollback depends on it).
        """
        vm = sim.state.vms[int(request.match_info["vmid"])]
        if request.method == "DELETE":
            vm.config.pop("lock", None)
        else:
            data = await request.json()
            lock = str(data.get("lock", "backup"))
            if vm.lock and vm.lock != lock:
                return web.json_response(
                    {"vmid": vm.vmid, "lock": vm.lock, "error": f"VM is locked ({vm.lock})"}, status=409
                )
            vm.config["lock"] = lock
            seconds = data.get("seconds")
            if seconds is not None:
                asyncio.get_running_loop().call_later(float(seconds), _unlock, sim, vm.vmid, lock)
        sim.changed()
        return web.json_response({"vmid": vm.vmid, "lock": vm.lock})

    async def agent_channel(request: web.Request) -> web.StreamResponse:
        """The guests process says where the guests' agents answer (lab/pvesim/qga.py)."""
        sim.agent_channel = AgentChannel.parse(await request.json())
        return web.json_response({"url": sim.agent_channel.url})

    async def vm_guest(request: web.Request) -> web.StreamResponse:
        """Lab knobs of one guest: ``impostorSshd`` makes its SSH server present keys other than
        the ones on its disk (a man in the middle); the guests process restarts it to apply."""
        vm = sim.state.vms[int(request.match_info["vmid"])]
        data = await request.json()
        for key in data:
            if key != "impostorSshd":
                raise KeyError(f"unknown guest knob {key!r}")
        vm.lab.update({"impostorSshd": bool(data["impostorSshd"])} if "impostorSshd" in data else {})
        sim.changed(guest=True)
        return web.json_response({"vmid": vm.vmid, **vm.lab})

    async def reset(request: web.Request) -> web.StreamResponse:
        sim.faults = Faults()
        sim.counts.reset()
        return web.json_response({"ok": True})

    async def info(request: web.Request) -> web.StreamResponse:
        running = sum(1 for t in sim.state.tasks.values() if t.status == "running")
        return web.json_response({"revision": sim.state.revision, "vms": len(sim.state.vms), "runningTasks": running,
                                  "time": time.time()})  # fmt: skip

    base = "/_admin/{token}"
    r = app.router
    r.add_get(base + "/guests", guard(guests))
    r.add_get(base + "/counts", guard(counts))
    r.add_post(base + "/counts/reset", guard(counts_reset))
    r.add_get(base + "/faults", guard(faults_get))
    r.add_put(base + "/faults", guard(faults_put))
    r.add_post(base + "/faults/reset", guard(faults_reset))
    r.add_get(base + "/timing", guard(timing_get))
    r.add_put(base + "/timing", guard(timing_put))
    r.add_post(base + "/nodes/{node}/{action:online|offline}", guard(node_power))
    r.add_route("POST", base + "/vms/{vmid}/lock", guard(vm_lock))
    r.add_route("DELETE", base + "/vms/{vmid}/lock", guard(vm_lock))
    r.add_put(base + "/agent-channel", guard(agent_channel))
    r.add_put(base + "/vms/{vmid}/guest", guard(vm_guest))
    r.add_post(base + "/reset", guard(reset))
    r.add_get(base + "/info", guard(info))


def _unlock(sim: Sim, vmid: int, lock: str) -> None:
    vm = sim.state.vms.get(vmid)
    if vm is not None and vm.lock == lock:
        vm.config.pop("lock", None)
        sim.changed()
