"""The K3s release channel server seam (``https://update.k3s.io/v1-release/channels`` by default).

The server answers ``GET <url>`` with a collection whose ``data[]`` items carry ``name`` and
``latest`` (the newest version on that channel). Errors: ``TransientError`` (reason
``ChannelServerUnavailable``) when it cannot be reached or answers something else.
"""

from __future__ import annotations

from typing import Any, Protocol


class ChannelServer(Protocol):
    async def fetch(self, url: str) -> Any:
        """The decoded JSON document at ``url`` (TLS verified)."""
        ...
