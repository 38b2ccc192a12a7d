"""etcd snapshots the K3s way: spec.etcdSnapshots as server configuration, a snapshot on demand, and
status.etcdSnapshots read from ``k3s etcd-snapshot ls -o json``.

The configuration is one file per server, ``config.yaml.d/50-k3s-deploy-etcd-snapshots.yaml`` (mode
0600: it may hold the S3 keys, which therefore never appear on a command line). K3s reads it when it
starts, so a server whose file changed is restarted, one server per pass. The listing is guest output
and treated as hostile: parsed strictly, each value checked and bounded, at most 50 entries kept.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from k3s_deploy import errors
from k3s_deploy.api.etcd_snapshots import EtcdSnapshotInfo, EtcdSnapshots
from k3s_deploy.api.formats import CONTROL_CHAR
from k3s_deploy.ports.ssh import guest_text
from k3s_deploy.services.k3scluster import access
from k3s_deploy.services.k3scluster.secrets import read_user_secret
from k3s_deploy.services.k3scluster.state import ClusterPass, NodeView

SNAPSHOT_REQUEST = "k3sdeploy.io/snapshot-request"
CONFIG_FILE = "/etc/rancher/k3s/config.yaml.d/50-k3s-deploy-etcd-snapshots.yaml"
LIST_COMMAND = "k3s etcd-snapshot ls -o json"
MAX_LISTED = 50
LIST_EVERY = timedelta(minutes=5)
SAVE_TIMEOUT_S = 300.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_NODE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]{1,19})(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_SAVED = re.compile(r"Snapshot ([A-Za-z0-9][A-Za-z0-9._-]{0,199}) saved")


# ----- configuration -------------------------------------------------------------------------------


def config_keys(spec: EtcdSnapshots | None, s3_keys: tuple[str, str] | None = None) -> dict[str, Any]:
    """The K3s server configuration spec.etcdSnapshots stands for (config-file keys = flag names).
    ``s3_keys`` is (accessKey, secretKey) from the Secret spec.etcdSnapshots.s3 names."""
    if spec is None:
        return {}
    keys: dict[str, Any] = {}
    if spec.schedule_cron:
        keys["etcd-snapshot-schedule-cron"] = spec.schedule_cron
    if spec.retention is not None:
        keys["etcd-snapshot-retention"] = spec.retention
    s3 = spec.s3
    if s3 is not None:
        keys["etcd-s3"] = True
        keys["etcd-s3-endpoint"] = s3.endpoint
        keys["etcd-s3-bucket"] = s3.bucket
        if s3.folder:
            keys["etcd-s3-folder"] = s3.folder
        if s3.region:
            keys["etcd-s3-region"] = s3.region
        if s3.skip_ssl_verify:
            keys["etcd-s3-skip-ssl-verify"] = True
        if s3_keys is not None:
            keys["etcd-s3-access-key"], keys["etcd-s3-secret-key"] = s3_keys
    return keys


def render(keys: Mapping[str, Any]) -> str | None:
    """The config.yaml.d file (each value JSON-quoted, which YAML reads as is); None: no file."""
    if not keys:
        return None
    return "# written by k3s-deploy from spec.etcdSnapshots; edits are replaced\n" + "".join(
        f"{key}: {json.dumps(value)}\n" for key, value in keys.items()
    )


def apply_script(content: str | None, *, service: str = "k3s") -> str:
    """Shell (sent on stdin) that puts ``content`` at CONFIG_FILE (or removes it), mode 0600, and
    restarts K3s only when the file changed and K3s runs; prints unchanged, written or restarted.
    A failed restart takes the new file away again, so the next pass tries once more."""
    f = shlex.quote(CONFIG_FILE)
    lines = ["set -eu", "umask 077", f"f={f}"]
    if content is None:
        lines.append('[ -e "$f" ] || { echo unchanged; exit 0; }')
        lines.append('rm -f "$f"')
    else:
        lines += [
            'new="$(mktemp)"',
            "cat > \"$new\" <<'K3SD_CONFIG_EOF'",
            content.rstrip("\n"),
            "K3SD_CONFIG_EOF",
        ]
        lines.append('if [ -f "$f" ] && cmp -s "$new" "$f"; then rm -f "$new"; echo unchanged; exit 0; fi')
        lines.append('mkdir -p "$(dirname "$f")"; chmod 0600 "$new"; mv -f "$new" "$f"')
    lines.append(
        f"if systemctl is-active {service} >/dev/null 2>&1; then "
        f'systemctl restart {service} || {{ rm -f "$f"; echo "k3s did not restart" >&2; exit 3; }}; '
        "echo restarted; else echo written; fi"
    )
    return "\n".join(lines) + "\n"


async def s3_keys(r: ClusterPass) -> tuple[str, str] | None:
    """(accessKey, secretKey) of the Secret spec.etcdSnapshots.s3 names (registered as secrets when read)."""
    spec = r.spec.etcd_snapshots
    if spec is None or spec.s3 is None:
        return None
    name = spec.s3.credentials_secret_ref.name
    field = "spec.etcdSnapshots.s3.credentialsSecretRef"
    data = await read_user_secret(r.deps.objects, r.ref.namespace, name, field=field)
    if data is None:
        raise errors.CredentialsError(
            f"Secret {name!r} (spec.etcdSnapshots.s3.credentialsSecretRef) not found in namespace "
            f"{r.ref.namespace!r}",
            reason="SecretNotFound",
        )
    out = []
    for key in ("accessKey", "secretKey"):
        raw = data.get(key)
        value = raw.decode("utf-8", "replace") if raw is not None else ""
        if not value or len(value) > 1024 or CONTROL_CHAR.search(value):
            raise errors.CredentialsError(
                f"Secret {name!r} needs key {key!r}: one line of text, at most 1024 characters",
                reason="SecretInvalid",
            )
        out.append(value)
    return out[0], out[1]


async def configure(r: ClusterPass, private_key: str) -> None:
    """Bring every reachable server's snapshot configuration file in line with the spec; restart at
    most one server per pass (the rest next pass: etcd keeps its quorum)."""
    spec = r.spec.etcd_snapshots
    if spec is None and r.old.etcd_snapshots_listed_time is None:
        return  # never configured: nothing to write or remove
    content = render(config_keys(spec, await s3_keys(r)))
    for view in servers(r):
        result = await r.deps.ssh.run(
            access.node_target(r, view, private_key), "sh -s", input=apply_script(content), timeout_s=180.0
        )
        if not result.ok:
            raise errors.CommandFailed(
                f"node {view.name}: writing {CONFIG_FILE} failed (exit {result.exit_status}): "
                f"{guest_text(result.stderr)}",
                exit_status=result.exit_status,
            )
        if "restarted" in result.stdout:
            r.event(
                "Normal",
                "SnapshotConfigApplied",
                f"K3s on {view.name} restarted with the new etcd snapshot settings",
            )
            raise errors.NotYet(1.0, "ApplyingSnapshotConfig", f"restarted K3s on {view.name}")
    if spec is None:
        r.status.etcd_snapshots = None
        r.status.etcd_snapshots_listed_time = None


def servers(r: ClusterPass) -> list[NodeView]:
    """The servers that can be reached, the init server first."""
    found = [v for v in r.views.values() if v.role == "server" and v.ip and v.vm_ready]
    init = r.status.init_server or r.old.init_server
    return sorted(found, key=lambda v: v.name != init)


# ----- listing and on-demand snapshots -------------------------------------------------------------


def parse_list(stdout: str) -> list[EtcdSnapshotInfo]:
    """``k3s etcd-snapshot ls -o json`` (an ETCDSnapshotFileList) as status entries, newest first.
    Not JSON of that shape: GuestInputRejected. Entries with a value out of bounds are left out."""
    try:
        doc = json.loads(stdout)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise errors.GuestInputRejected(
            f"`{LIST_COMMAND}` did not print a snapshot list: {guest_text(stdout, 80)!r}",
            reason="GuestValueInvalid",
        )
    out = [entry for item in doc["items"][:10_000] if (entry := _entry(item)) is not None]
    out.sort(key=lambda e: (e.created_time or datetime.min.replace(tzinfo=UTC), e.name), reverse=True)
    return out[:MAX_LISTED]


def _entry(item: Any) -> EtcdSnapshotInfo | None:
    spec = item.get("spec") if isinstance(item, dict) else None
    state = item.get("status") if isinstance(item, dict) else None
    if not isinstance(spec, dict):
        return None
    state = state if isinstance(state, dict) else {}
    name, node, location = spec.get("snapshotName"), spec.get("nodeName"), spec.get("location")
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        return None
    if not (isinstance(node, str) and _NODE.fullmatch(node)):
        return None
    if not isinstance(location, str) or len(location) > 1024 or CONTROL_CHAR.search(location):
        return None
    if not location.startswith(("file:///", "s3://")) or state.get("readyToUse") is False:
        return None
    return EtcdSnapshotInfo(
        name=name,
        node=node,
        location=location,
        size=_size(state.get("size")),
        created_time=_time(state.get("creationTime")),
    )


def _size(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    size = int(match.group(1)) * _UNITS[match.group(2)]
    return size if size < 2**63 else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


async def list_on(r: ClusterPass, view: NodeView, private_key: str) -> list[EtcdSnapshotInfo]:
    """The snapshots ``view`` (a server) knows of."""
    result = await r.deps.ssh.run(access.node_target(r, view, private_key), LIST_COMMAND, timeout_s=60.0)
    if not result.ok:
        raise errors.CommandFailed(
            f"node {view.name}: `{LIST_COMMAND}` failed (exit {result.exit_status}): {guest_text(result.stderr)}",
            exit_status=result.exit_status,
        )
    return parse_list(result.stdout)


def request_name(token: str) -> str:
    """The --name of an on-demand snapshot: the annotation's value made a safe K3s name."""
    name = re.sub(r"[^a-z0-9-]+", "-", token.lower()).strip("-")[:40].strip("-")
    return name or "on-demand"


async def after_ready(r: ClusterPass, private_key: str, now: datetime | None = None) -> None:
    """On a Ready cluster: take the snapshot the annotation asks for, and refresh the listing."""
    now = now or datetime.now(UTC)
    annotations = (r.model.metadata.get("annotations") or {}) if isinstance(r.model.metadata, dict) else {}
    token = annotations.get(SNAPSHOT_REQUEST)
    init = next(iter(servers(r)), None)
    if init is None:
        return
    fresh = False
    if isinstance(token, str) and token and token[:63] != (r.old.snapshot_request or ""):
        r.status.snapshot_request = token[:63]
        await _take(r, init, private_key, request_name(token))
        fresh = True
    if r.spec.etcd_snapshots is None:
        return
    listed = r.old.etcd_snapshots_listed_time
    if not fresh and listed is not None and now - listed < LIST_EVERY:
        return
    try:
        r.status.etcd_snapshots = await list_on(r, init, private_key)
    except errors.K3sDeployError as exc:
        if r.old.etcd_snapshots_listed_time is None or fresh:
            r.event("Warning", "SnapshotListFailed", exc.message)
    r.status.etcd_snapshots_listed_time = now


async def _take(r: ClusterPass, view: NodeView, private_key: str, name: str) -> None:
    target = access.node_target(r, view, private_key)
    command = f"k3s etcd-snapshot save --name {shlex.quote(name)}"
    try:
        result = await r.deps.ssh.run(target, command, timeout_s=SAVE_TIMEOUT_S)
    except errors.TransientError:
        r.status.snapshot_request = r.old.snapshot_request  # not handled: try again next pass
        raise
    if not result.ok:
        r.event(
            "Warning",
            "SnapshotFailed",
            f"`{command}` on {view.name} failed (exit {result.exit_status}): {guest_text(result.stderr or result.stdout, 300)}",
        )
        return
    saved = _SAVED.search(result.stdout + "\n" + result.stderr)
    what = saved.group(1) if saved else f"{name}-{view.name}-<time>"
    r.event("Normal", "SnapshotTaken", f"etcd snapshot {what} taken on {view.name}")
