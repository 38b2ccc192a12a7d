"""The artefact seam: the operator downloads K3s installer, binary and images for air-gapped sites.

With ``installSource.airGap.fetchFrom: Operator`` the nodes cannot reach the download location but the
operator can: it fetches each URL once (https only, fenced by the operator's allow-list, checksummed,
size-limited), keeps the file in a local cache
and copies it to every node over SSH. Errors: ``ArtefactUnavailable`` (transient: the server did not
answer, 5xx, a connection dropped) and ``ArtefactRejected`` (permanent: 4xx, too large, checksum).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Artefact:
    """A downloaded file in the operator's local cache."""

    url: str
    path: Path
    size: int
    sha256: str


class ArtefactFetcher(Protocol):
    async def fetch(self, url: str, *, max_bytes: int, sha256: str) -> Artefact:
        """The file at ``url``, downloaded once per URL (concurrent callers share one download).

        ``sha256`` (hex, from the spec) must match the content or ``ArtefactRejected`` is raised.
        Refused (``ArtefactRejected`` or ``AddressRefused``, with a reason naming the rule) when the
        operator's download fence does not let the URL or one of its redirects through.
        """
        ...
