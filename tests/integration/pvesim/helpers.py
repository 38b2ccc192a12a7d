"""Helpers shared by the simulator contract tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from fixtures.pve import PveSim


def raw(
    sim: PveSim, method: str, path: str, *, token: str | None = None, auth: bool = True, **kwargs: Any
) -> requests.Response:
    """A plain HTTPS request to /api2/json (to check status codes, reasons and bodies exactly)."""
    headers = dict(kwargs.pop("headers", {}))
    if auth:
        headers.update(sim.token_header(token))
    return requests.request(method, sim.api_url + path, headers=headers, verify=sim.ca, timeout=30, **kwargs)


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        time.sleep(interval)
