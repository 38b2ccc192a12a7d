"""etcd snapshots as K3s takes them: real etcd snapshot files, K3s's names, cron schedules and retention.

A snapshot is streamed from the cluster's etcd through its v3 API (``Maintenance/Snapshot``, what
``etcdctl snapshot save`` calls), so the file is a real etcd snapshot with its trailing SHA-256; a
restore is ``etcdutl snapshot restore`` into a fresh data dir, as K3s's ``--cluster-reset-restore-path``
does with the same library. Names follow K3s: ``<name>-<node>-<unix seconds>``, scheduled ones
``etcd-snapshot-<node>-<unix seconds>``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

DB_DIR = "/var/lib/rancher/k3s/server/db"
DEFAULT_DIR = f"{DB_DIR}/snapshots"
DEFAULT_CRON = "0 */12 * * *"
DEFAULT_RETENTION = 5
SCHEDULED_PREFIX = "etcd-snapshot"


class SnapshotError(RuntimeError):
    """The snapshot or restore failed; the message is what K3s would print."""


async def save(etcd_url: str, dest: Path) -> int:
    """Stream a snapshot of the etcd at ``etcd_url`` into ``dest``; return its size in bytes."""
    tmp = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{etcd_url}/v3/maintenance/snapshot", json={}) as resp,
    ):
        if resp.status != 200:
            raise SnapshotError(f"etcd snapshot: {resp.status} {await resp.text()}")
        with tmp.open("wb") as f:
            async for line in resp.content:
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise SnapshotError(f"etcd snapshot: {message['error'].get('message')}")
                blob = message.get("result", {}).get("blob")
                if blob:
                    size += f.write(base64.b64decode(blob))
    tmp.chmod(0o600)
    tmp.replace(dest)
    return size


async def restore(etcdutl: Path, snapshot: Path, data_dir: Path, *, peer_url: str) -> None:
    """Build a fresh single-member etcd data dir from ``snapshot`` (``etcdutl snapshot restore``)."""
    staging = data_dir.with_name(data_dir.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    proc = await asyncio.create_subprocess_exec(
        str(etcdutl),
        "snapshot",
        "restore",
        str(snapshot),
        f"--data-dir={staging}",
        "--name=lab",
        f"--initial-cluster=lab={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        lines = out.decode(errors="replace").strip().splitlines()
        raise SnapshotError(f"etcd: restore failed: {lines[-1] if lines else proc.returncode}")
    shutil.rmtree(data_dir, ignore_errors=True)
    staging.replace(data_dir)


def snapshot_name(prefix: str, node: str, when: float | None = None) -> str:
    return f"{prefix}-{node}-{int(when if when is not None else time.time())}"


@dataclass(frozen=True)
class SnapshotFile:
    name: str
    location: str  # file:///<path in the guest>
    size: int
    created: str  # RFC 3339, UTC


def listing(host_dir: Path, guest_dir: str) -> list[SnapshotFile]:
    """The snapshot files in a server's snapshot dir, oldest first (what ``etcd-snapshot ls`` shows)."""
    if not host_dir.is_dir():
        return []
    files = [p for p in host_dir.iterdir() if p.is_file() and not p.name.endswith(".part")]
    out = []
    for path in sorted(files, key=lambda p: (p.stat().st_mtime, p.name)):
        stat = path.stat()
        created = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.UTC)
        out.append(
            SnapshotFile(
                name=path.name,
                location=f"file://{guest_dir.rstrip('/')}/{path.name}",
                size=stat.st_size,
                created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        )
    return out


def table(files: list[SnapshotFile]) -> str:
    """``k3s etcd-snapshot ls``: Name, Location, Size, Created (tab-aligned like Go's tabwriter)."""
    rows = [("Name", "Location", "Size", "Created")]
    rows += [(f.name, f.location, str(f.size), f.created) for f in files]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "".join(
        "".join(cell.ljust(widths[i] + 1) for i, cell in enumerate(r[:3])) + r[3] + "\n" for r in rows
    )


def prune(host_dir: Path, prefix: str, keep: int) -> list[str]:
    """Delete the oldest ``<prefix>-*`` snapshots beyond ``keep``; return the names removed."""
    if keep < 1 or not host_dir.is_dir():
        return []
    mine = [p for p in host_dir.iterdir() if p.is_file() and p.name.startswith(prefix + "-")]
    mine.sort(key=lambda p: (p.stat().st_mtime, p.name))
    gone = mine[: max(0, len(mine) - keep)]
    for path in gone:
        path.unlink(missing_ok=True)
    return [p.name for p in gone]


# ----- cron (robfig/cron's standard parser, which K3s uses) -------------------------------------------

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng in ("*", "?"):
            start, end = low, high
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(rng)
            end = high if step_text else start
        if start < low or end > high or start > end or step < 1:
            raise ValueError(f"value out of range in {text!r}")
        values.update(range(start, end + 1, step))
    return values


def _go_duration(text: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(a + u for a, u in parts) != text:
        raise ValueError(f"failed to parse duration @every {text}")
    return sum(float(a) * _UNIT[u] for a, u in parts)


def next_run(spec: str, after: float) -> float:
    """The next time after ``after`` (epoch seconds, UTC) that ``spec`` fires; ValueError when invalid."""
    spec = spec.strip()
    if spec.startswith("@every "):
        return after + max(1.0, _go_duration(spec.removeprefix("@every ").strip()))
    fields = _DESCRIPTORS.get(spec, spec).split()
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(fields)}: {spec}")
    minute, hour, dom, month, dow = (_field(f, *b) for f, b in zip(fields, _BOUNDS, strict=True))
    dow = {d % 7 for d in dow}
    dom_any, dow_any = fields[2] in ("*", "?"), fields[4] in ("*", "?")
    t = datetime.datetime.fromtimestamp(after, datetime.UTC).replace(second=0, microsecond=0)
    for _ in range(366 * 24 * 60):
        t += datetime.timedelta(minutes=1)
        if t.minute not in minute or t.hour not in hour or t.month not in month:
            continue
        day_ok = t.day in dom
        weekday_ok = (t.weekday() + 1) % 7 in dow
        if (day_ok and weekday_ok) if (dom_any or dow_any) else (day_ok or weekday_ok):
            return t.timestamp()
    raise ValueError(f"{spec} never fires")


# ----- k3s etcd-snapshot ls -o json -----------------------------------------------------------------


def quantity(size: int) -> str:
    """A size as Kubernetes serialises ``resource.NewQuantity(size, BinarySI)``: exact Ki/Mi/Gi/Ti
    multiples with their suffix, anything else as plain bytes."""
    for suffix, unit in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def json_list(files: list[tuple[str, SnapshotFile]]) -> str:
    """``k3s etcd-snapshot ls -o json``: an ETCDSnapshotFileList (k3s.cattle.io/v1) of every server's
    snapshots, oldest first, printed as kubectl's JSON printer does (4-space indent)."""
    ordered = sorted(files, key=lambda nf: (nf[1].created, nf[1].name))
    items = [
        {
            "apiVersion": "k3s.cattle.io/v1",
            "kind": "ETCDSnapshotFile",
            "metadata": {"name": f"local-{f.name}"[:253].lower(), "creationTimestamp": None},
            "spec": {"snapshotName": f.name, "nodeName": node, "location": f.location},
            "status": {"readyToUse": True, "size": quantity(f.size), "creationTime": f.created},
        }
        for node, f in ordered
    ]
    doc = {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}
    return json.dumps(doc, indent=4) + "\n"
