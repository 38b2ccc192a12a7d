"""QEMU guest agent answers: only for a running, booted guest with the agent enabled.

``file-read`` is carried out by the guest itself (pvesim/qga.py): qemu-server opens the file through
the agent, reads it in 1 MiB chunks up to ``count`` (default and maximum 16 MiB), and answers
``content`` (the bytes, or with ``decode=0`` the agent's base64 of each chunk, concatenated), the
undocumented ``bytes-read``, and ``truncated: 1`` when the last read did not reach the end.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from typing import Any

from k3s_deploy_lab.pvesim import qga
from k3s_deploy_lab.pvesim.apierror import ApiError, param_error
from k3s_deploy_lab.pvesim.cloudinit import nic_indexes
from k3s_deploy_lab.pvesim.model import VM
from k3s_deploy_lab.pvesim.routing import Call, route
from k3s_deploy_lab.pvesim.vmconfig import net_mac

COMMANDS = ["fsfreeze-freeze", "fsfreeze-status", "fsfreeze-thaw", "fstrim", "get-fsinfo", "get-host-name",
            "get-memory-block-info", "get-memory-blocks", "get-osinfo", "get-time", "get-timezone", "get-users",
            "get-vcpus", "info", "network-get-interfaces", "ping", "shutdown", "suspend-disk", "suspend-hybrid",
            "suspend-ram"]  # fmt: skip


async def _ready_vm(call: Call) -> VM:
    sim = call.sim
    vm = sim.vm(call.node, call.vmid)
    if not sim.agent_enabled(vm):
        raise ApiError(500, "No QEMU guest agent configured")
    if vm.status != "running":
        raise ApiError(500, f"VM {vm.vmid} is not running")
    if not sim.agent_ready(vm):
        await asyncio.sleep(sim.seconds("agentTimeout"))
        if not sim.agent_ready(vm):
            raise ApiError(500, "QEMU guest agent is not running")
    return vm


def _ipv6_link_local(mac: str) -> str:
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 2
    eui = bytes([*b[:3], 0xFF, 0xFE, *b[3:]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui))


def interfaces(call: Call, vm: VM) -> list[dict[str, Any]]:
    stats = {"rx-bytes": 1_200_000, "rx-packets": 9000, "rx-errs": 0, "rx-dropped": 0,
             "tx-bytes": 800_000, "tx-packets": 7000, "tx-errs": 0, "tx-dropped": 0}  # fmt: skip
    out: list[dict[str, Any]] = [{
        "name": "lo", "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                         {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}],
        "statistics": stats,
    }]  # fmt: skip
    found = call.sim.nic_addresses(vm)
    for idx in nic_indexes(vm.config):
        mac = net_mac(vm.config[f"net{idx}"])
        if not mac:
            continue
        addrs = (
            [{"ip-address": found[idx][0], "ip-address-type": "ipv4", "prefix": found[idx][1]}]
            if idx in found
            else []
        )
        addrs.append({"ip-address": _ipv6_link_local(mac), "ip-address-type": "ipv6", "prefix": 64})
        out.append(
            {"name": f"eth{idx}", "hardware-address": mac.lower(), "ip-addresses": addrs, "statistics": stats}
        )
    return out


def _run(call: Call, vm: VM, command: str) -> Any:
    if command == "ping":
        return {}
    if command == "network-get-interfaces":
        return interfaces(call, vm)
    if command == "get-host-name":
        return {"host-name": (vm.booted or {}).get("name", vm.name)}
    if command == "get-osinfo":
        return {"id": "ubuntu", "name": "Ubuntu", "pretty-name": "Ubuntu 24.04.2 LTS", "version": "24.04.2 LTS (Noble Numbat)",
                "version-id": "24.04", "kernel-release": "6.8.0-60-generic", "kernel-version": "#63-Ubuntu SMP",
                "machine": "x86_64"}  # fmt: skip
    if command == "info":
        return {"version": "8.2.2", "supported_commands": [{"name": c, "enabled": True, "success-response": True}
                                                          for c in COMMANDS]}  # fmt: skip
    raise ApiError(500, f"Agent error: The command {command} has not been found")


@route("GET", "/nodes/{node}/qemu/{vmid}/agent")
async def agent_index(call: Call) -> Any:
    call.sim.vm(call.node, call.vmid)
    return [{"name": c} for c in COMMANDS]


@route("POST", "/nodes/{node}/qemu/{vmid}/agent")
async def agent_command(call: Call) -> Any:
    command = str(call.params["command"])
    if command not in COMMANDS:
        raise param_error({"command": f"value '{command}' does not have a value in the enumeration"})
    vm = await _ready_vm(call)
    return {"result": _run(call, vm, command)}


def _simple(command: str, method: str) -> None:
    async def handler(call: Call) -> Any:
        vm = await _ready_vm(call)
        return {"result": _run(call, vm, command)}

    handler.__name__ = f"agent_{command.replace('-', '_')}"
    route(method, f"/nodes/{{node}}/qemu/{{vmid}}/agent/{command}")(handler)


for _cmd, _method in (("ping", "POST"), ("network-get-interfaces", "GET"), ("get-host-name", "GET"),
                      ("get-osinfo", "GET"), ("info", "GET")):  # fmt: skip
    _simple(_cmd, _method)


MAX_READ_SIZE = 16 * 1024 * 1024
_CHUNK = 1024 * 1024


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read")
async def agent_file_read(call: Call) -> Any:
    vm = await _ready_vm(call)
    count = int(call.params.get("count", MAX_READ_SIZE))
    decode = call.params.get("decode", True)
    offset = int(call.params.get("offset", 0))
    path = str(call.params["file"])
    try:
        data, eof = await qga.read_file(
            call.sim.agent_channel, vmid=vm.vmid, instance_id=vm.instance_id, path=path,
            offset=offset, count=count,
        )  # fmt: skip
    except qga.AgentGone:
        await asyncio.sleep(call.sim.seconds("agentTimeout"))
        raise ApiError(500, "QEMU guest agent is not running") from None
    except qga.AgentFailed as exc:
        raise ApiError(500, f"Agent error: {exc}") from None
    if decode:
        content = data.decode("latin-1")  # Perl's JSON writes each byte as one code point
    else:
        chunks = [data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [b""]
        content = "".join(base64.b64encode(chunk).decode() for chunk in chunks)
    result: dict[str, Any] = {"content": content, "bytes-read": len(data)}
    if not eof:
        result["truncated"] = 1
    return result
