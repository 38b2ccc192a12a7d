"""The channel-server adapter and parser against the lab's stand-in of update.k3s.io, and the
remembered failure of an unreachable server (no retry storm on every pass)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from k3s_deploy import errors
from k3s_deploy.adapters.channels import HttpChannelServer
from k3s_deploy.netpolicy import AllowList
from k3s_deploy.services.k3scluster import channels

pytestmark = pytest.mark.integration

# The lab's channel server is on loopback, which the operator reaches only when its admin allows it.
LOOPBACK = AllowList.parse(["127.0.0.1"])


async def test_resolves_channels_served_by_the_lab(guests: Any) -> None:
    url = f"{guests.http_url}/v1-release/channels"
    table = channels.parse(await HttpChannelServer(LOOPBACK).fetch(url))
    assert table["stable"] == guests.k3s.channels["stable"] and "latest" in table
    res = await channels.resolve(
        HttpChannelServer(LOOPBACK), url, "latest", previous=None, now=datetime.now(UTC)
    )
    assert res.version == guests.k3s.channels["latest"]


async def test_unreachable_server_fails_fast_after_the_first_try() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    server = HttpChannelServer(LOOPBACK, timeout_s=5, retry_after_s=60)
    url = f"http://127.0.0.1:{port}/v1-release/channels"
    with pytest.raises(errors.TransientError) as first:
        await server.fetch(url)
    assert first.value.reason == "ChannelServerUnavailable"
    started = time.monotonic()
    with pytest.raises(errors.TransientError):
        await server.fetch(url)
    assert time.monotonic() - started < 0.05
