"""spec.etcdSnapshots and what status reports of them: K3s's own etcd snapshots (schedule, retention,
S3), an on-demand snapshot by annotation, and a restore driven by the operator.

Everything here becomes K3s server configuration or a ``k3s etcd-snapshot`` / ``k3s server
--cluster-reset`` run on the servers; S3 credentials stay in a Secret and reach only a 0600 file on
the servers, never spec, status, argv or logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from k3s_deploy.api.common import ApiModel, SecretRef, StatusModel
from k3s_deploy.api.formats import DnsName, Pattern

# robfig/cron's standard parser (what K3s uses): five fields, or a descriptor, or @every <duration>.
CronSchedule = Annotated[
    str,
    Pattern(
        r"@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9][0-9a-z.]*"
        r"|[0-9A-Za-z*?/,-]+( [0-9A-Za-z*?/,-]+){4}",
        100,
        "is not a cron schedule; write five fields like '0 */12 * * *', a descriptor like @daily, "
        "or '@every 6h'",
    ),
]
# What K3s accepts in --name and what the operator puts in a file path: no '/', no spaces.
SnapshotName = Annotated[
    str,
    Pattern(
        r"[A-Za-z0-9][A-Za-z0-9._-]*",
        200,
        "is not a snapshot name (letters, digits, '.', '_' and '-'; as `k3s etcd-snapshot ls` shows it)",
    ),
]
RequestId = Annotated[
    str,
    Pattern(
        r"[A-Za-z0-9][A-Za-z0-9._-]*",
        63,
        "is not a request id (letters, digits, '.', '_' and '-', like 2025-01-31-1)",
    ),
]
S3Folder = Annotated[
    str,
    Pattern(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", 255, "is not an S3 folder (like backups/cluster-a)"),
]
S3Endpoint = Annotated[
    str,
    Pattern(
        r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*(:[0-9]{1,5})?",
        259,
        "is not an S3 endpoint; write host or host:port, without https:// (like minio.example.internal:9000)",
    ),
]
BucketName = Annotated[
    str,
    Pattern(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", 63, "is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')"),
]

RestoreStep = Literal[
    "Pending",
    "StoppingServers",
    "Resetting",
    "StartingInit",
    "Rejoining",
    "WaitingReady",
    "Complete",
    "Failed",
]


class EtcdS3(ApiModel):
    """An S3 target for the snapshots (K3s's --etcd-s3 flags); the keys come from a Secret."""

    endpoint: S3Endpoint = Field(default="s3.amazonaws.com", description="S3 endpoint, host or host:port.")
    bucket: BucketName = Field(description="Bucket the snapshots are uploaded to.")
    folder: S3Folder | None = Field(default=None, description="Folder inside the bucket.")
    region: DnsName | None = Field(default=None, description="S3 region (K3s's default: us-east-1).")
    skip_ssl_verify: bool = Field(
        default=False,
        alias="skipSSLVerify",
        description="Do not verify the endpoint's TLS certificate (off: keep it off).",
    )
    credentials_secret_ref: SecretRef = Field(
        description="Secret with keys accessKey and secretKey. They are written only to a 0600 config file "
        "on the servers (never a command line, spec, status or log)."
    )


class EtcdRestore(ApiModel):
    """A one-shot restore: runs once per requestId."""

    name: SnapshotName = Field(
        description="Snapshot to restore, as status.etcdSnapshots[].name shows it; it must be on the init server."
    )
    request_id: RequestId = Field(
        description="Any new value runs the restore once more; the one handled is status.etcdRestore.requestId."
    )


class EtcdSnapshots(ApiModel):
    """K3s's etcd snapshots (clusters with embedded etcd, i.e. more than one server or --cluster-init)."""

    schedule_cron: CronSchedule | None = Field(
        default=None,
        description="When K3s takes scheduled snapshots (etcd-snapshot-schedule-cron; K3s's default 0 */12 * * *).",
    )
    retention: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Scheduled snapshots kept per server (etcd-snapshot-retention; K3s's default 5).",
    )
    s3: EtcdS3 | None = Field(default=None, description="Also upload the snapshots to S3.")
    restore: EtcdRestore | None = Field(
        default=None,
        description="Restore the cluster from a snapshot: k3s stops on every server, the init server runs "
        "--cluster-reset --cluster-reset-restore-path, the other servers drop their etcd data and rejoin.",
    )


class EtcdSnapshotInfo(StatusModel):
    """One snapshot, as `k3s etcd-snapshot ls -o json` reported it (checked and bounded)."""

    name: str = Field(max_length=200, description="Snapshot name (what restore.name takes).")
    node: str = Field(max_length=253, description="Node that took it (s3 for a copy in S3).")
    location: str = Field(max_length=1024, description="file:// path on that node or s3:// URL.")
    size: int | None = Field(default=None, ge=0, description="Size in bytes.")
    created_time: datetime | None = Field(default=None, description="When etcd took it.")


class EtcdRestoreStatus(StatusModel):
    """Progress of a restore, so an operator restarted mid-restore goes on where it was."""

    request_id: str = Field(max_length=63, description="spec.etcdSnapshots.restore.requestId handled.")
    name: str = Field(max_length=200, description="Snapshot being restored.")
    step: RestoreStep = Field(description="Where the restore is.")
    path: str | None = Field(default=None, max_length=1024, description="Snapshot file on the init server.")
    rejoined: list[str] = Field(default_factory=list, max_length=100, description="Servers that rejoined.")
    started_time: datetime | None = Field(default=None, description="When the restore was requested.")
    step_started_time: datetime | None = Field(
        default=None, description="When the current step began (its guest job's timeout counts from it)."
    )
    finished_time: datetime | None = Field(default=None, description="When the cluster was Ready again.")
    message: str | None = Field(default=None, max_length=1024, description="Last step done or problem.")
