"""K3s release versions: ordering, the lowest across nodes, and the downgrade rule (pure).

K3s versions look like ``v1.31.4+k3s1`` or ``v1.32.0-rc2+k3s1``. They order by the Kubernetes
version, then release candidates before the release, then the ``k3sN`` revision, which is what
"newer" means to the channel server and to a rolling upgrade.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from k3s_deploy import errors

_VERSION = re.compile(
    r"^v?(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+k3s(?P<rev>\d+))?"
)

Key = tuple[int, int, int, int, tuple[tuple[int, str], ...], int]


def key(version: str) -> Key:
    """Sort key: (major, minor, patch, is-release, pre-release parts, k3s revision).

    Raises ``InvalidSpec`` for text that is not a K3s version, so a typo never orders silently.
    """
    match = _VERSION.match(version.strip())
    if match is None:
        raise errors.InvalidSpec(
            f"{version!r} is not a K3s version such as v1.31.4+k3s1", reason="InvalidVersion"
        )
    pre = match.group("pre")
    parts = tuple((int(p), "") if p.isdigit() else (-1, p) for p in pre.split(".")) if pre else ()
    return (
        int(match.group("major")),
        int(match.group("minor")),
        int(match.group("patch")),
        0 if pre else 1,
        parts,
        int(match.group("rev") or 0),
    )


def is_version(text: str | None) -> bool:
    return bool(text) and _VERSION.match(str(text).strip()) is not None


def newer(a: str, b: str) -> bool:
    """True when ``a`` is a later release than ``b``."""
    return key(a) > key(b)


def lowest(versions: Iterable[str | None]) -> str | None:
    """The oldest of the known versions (the cluster's ``k3sVersion``), None when none is known."""
    known = [v for v in versions if v and is_version(v)]
    return min(known, key=key) if known else None


def highest(versions: Iterable[str | None]) -> str | None:
    known = [v for v in versions if v and is_version(v)]
    return max(known, key=key) if known else None


def check_downgrade(target: str, installed: Iterable[str | None], *, allowed: bool) -> None:
    """Refuse moving any node to an older release unless ``allowDowngrade`` says so.

    K3s does not support downgrades in general (etcd and datastore migrations only go forward), so the
    default is to stop with a condition that says how to proceed.
    """
    top = highest(installed)
    if top is None or allowed or not newer(top, target):
        return
    raise errors.InvalidSpec(
        f"spec.k3s.version {target} is older than {top}, which runs on the cluster: downgrades are refused. "
        f"Set spec.k3s.version back to {top} or newer, or set spec.k3s.allowDowngrade: true if you are sure",
        reason="DowngradeRefused",
    )


def minor(version: str) -> tuple[int, int]:
    k = key(version)
    return k[0], k[1]
