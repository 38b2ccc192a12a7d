"""The version check: resolve a release channel to its newest version (the old ``check-version``).

The channel server's answer is parsed here (pure); fetching goes through the ChannelServer port. A
resolution is kept in ``status.channelResolution`` and reused for a while (``K3SD_CHANNEL_CHECK_SECONDS``,
10 minutes by default), so the periodic resync does not hit the public server
on every pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from k3s_deploy import errors
from k3s_deploy.ports.channels import ChannelServer
from k3s_deploy.services.k3scluster import versions

DEFAULT_CHANNEL = "stable"
CHANNEL_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class Resolution:
    channel: str
    version: str
    resolved_time: datetime

    def as_status(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "version": self.version,
            "resolvedTime": self.resolved_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


def parse(document: Any) -> dict[str, str]:
    """``{channel name: latest version}`` from the server's collection (items without both are skipped)."""
    data = document.get("data") if isinstance(document, Mapping) else None
    if not isinstance(data, list):
        raise errors.TransientError(
            "the channel server's answer has no data[] list of channels", reason="ChannelServerUnavailable"
        )
    out: dict[str, str] = {}
    for item in data:
        if not isinstance(item, Mapping):
            continue
        name = item.get("name") or item.get("id")
        latest = item.get("latest")
        if isinstance(name, str) and isinstance(latest, str) and versions.is_version(latest):
            out[name] = latest
    return out


def cached(
    previous: Mapping[str, Any] | None, channel: str, now: datetime, *, ttl: timedelta = CHANNEL_TTL
) -> Resolution | None:
    """The resolution recorded in status, if it is for ``channel`` and recent enough."""
    if not previous or previous.get("channel") != channel or not previous.get("version"):
        return None
    raw = previous.get("resolvedTime")
    try:
        when = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    if now - when > ttl or when > now + timedelta(minutes=1):
        return None
    return Resolution(channel, str(previous["version"]), when)


async def resolve(
    server: ChannelServer,
    url: str,
    channel: str,
    *,
    previous: Mapping[str, Any] | None,
    now: datetime,
    ttl: timedelta = CHANNEL_TTL,
) -> Resolution:
    """The newest version of ``channel`` from the server at ``url`` (the last answer reused for ``ttl``)."""
    hit = cached(previous, channel, now, ttl=ttl)
    if hit is not None:
        return hit
    table = parse(await server.fetch(url))
    version = table.get(channel)
    if version is None:
        known = ", ".join(sorted(table)[:12]) or "none"
        raise errors.InvalidSpec(
            f"channel {channel!r} is not served by {url} (channels there: {known})", reason="UnknownChannel"
        )
    return Resolution(channel, version, now)
