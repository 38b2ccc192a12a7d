"""The simulator's end of the guest agent channel: file reads are answered by the guest itself.

A real ``agent/file-read`` is carried out by qemu-guest-agent inside the VM. In the lab the guests
process plays that agent (see lab/guests/qga.py): it registers a loopback URL and a secret through
the admin endpoint, and each read is forwarded there. Without a registered channel the agent answers
as one on an empty disk: the file does not exist.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

import aiohttp


class AgentGone(Exception):
    """The guest's agent did not answer (the guest is not running as this VM instance)."""


class AgentFailed(Exception):
    """The agent answered with an error (qemu-ga's ``desc``)."""


@dataclass(frozen=True)
class AgentChannel:
    url: str
    token: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> AgentChannel:
        """Accept only a loopback http(s) URL: the simulator never calls anything else."""
        url, token = str(body["url"]).rstrip("/"), str(body["token"])
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"agent channel URL {url!r} is not http(s)://host:port")
        if not ipaddress.ip_address(parts.hostname).is_loopback:
            raise ValueError(f"agent channel URL {url!r} is not on a loopback address")
        if len(token) < 16:
            raise ValueError("agent channel token is too short")
        return cls(url, token)


async def read_file(
    channel: AgentChannel | None, *, vmid: int, instance_id: str, path: str, offset: int, count: int
) -> tuple[bytes, bool]:
    """(bytes read, eof) from the guest, as qemu-ga's open/seek/read/close would give them."""
    if channel is None:
        raise AgentFailed(f"failed to open file '{path}' (mode: 'r'): No such file or directory")
    body = {"vmid": vmid, "instanceId": instance_id, "path": path, "offset": offset, "count": count}
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                f"{channel.url}/qga/v1/file-read",
                json=body,
                headers={"Authorization": f"Bearer {channel.token}"},
            ) as resp,
        ):
            if resp.status == 409:
                raise AgentGone(path)
            resp.raise_for_status()
            answer = json.loads(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AgentGone(str(exc)) from exc
    if "error" in answer:
        raise AgentFailed(str(answer["error"]))
    return base64.b64decode(answer["data"]), bool(answer["eof"])
