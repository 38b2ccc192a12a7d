"""etcd snapshots in the operator: the K3s configuration spec.etcdSnapshots renders (S3 keys from the
Secret, only in a 0600 file sent on stdin), the strict reading of ``k3s etcd-snapshot ls -o json``, the
on-demand snapshot by annotation (once per value), and the restore's steps across passes (in order, on
the right servers, resumed after a crash, once per requestId)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3s_deploy import errors
from k3s_deploy.api.etcd_snapshots import EtcdSnapshots
from k3s_deploy.ports.ssh import CommandResult, SshTarget
from k3s_deploy.services.k3scluster import snapshots

from .fakes import FakeAgents, FakeSsh, FakeTarget
from .test_reconcile import NS, World, cluster_body

SNAP_DIR = "/var/lib/rancher/k3s/server/db/snapshots"


def _item(
    name: str, node: str, *, size: Any = "2174976", created: str = "2025-01-01T00:00:00Z"
) -> dict[str, Any]:
    return {
        "apiVersion": "k3s.cattle.io/v1",
        "kind": "ETCDSnapshotFile",
        "metadata": {"name": f"local-{name}"},
        "spec": {"snapshotName": name, "nodeName": node, "location": f"file://{SNAP_DIR}/{name}"},
        "status": {"readyToUse": True, "size": size, "creationTime": created},
    }


def _doc(*items: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)}, indent=4)


def test_config_keys_are_k3s_flag_names_and_s3_stays_verified() -> None:
    spec = EtcdSnapshots.model_validate(
        {
            "scheduleCron": "0 */6 * * *",
            "retention": 7,
            "s3": {
                "endpoint": "minio.example.internal:9000",
                "bucket": "backups",
                "folder": "prod/a",
                "region": "eu-west-1",
                "credentialsSecretRef": {"name": "s3"},
            },
        }
    )
    keys = snapshots.config_keys(spec, ("AKIAEXAMPLE", "s3cr3t-value"))
    assert keys == {
        "etcd-snapshot-schedule-cron": "0 */6 * * *",
        "etcd-snapshot-retention": 7,
        "etcd-s3": True,
        "etcd-s3-endpoint": "minio.example.internal:9000",
        "etcd-s3-bucket": "backups",
        "etcd-s3-folder": "prod/a",
        "etcd-s3-region": "eu-west-1",
        "etcd-s3-access-key": "AKIAEXAMPLE",
        "etcd-s3-secret-key": "s3cr3t-value",
    }  # no etcd-s3-skip-ssl-verify: verification stays on unless the spec turns it off
    text = snapshots.render(keys)
    assert text is not None and 'etcd-s3-secret-key: "s3cr3t-value"\n' in text
    script = snapshots.apply_script(text)
    assert "umask 077" in script and 'chmod 0600 "$new"' in script
    assert snapshots.render(snapshots.config_keys(None)) is None


@pytest.mark.parametrize(
    "field,value",
    [("scheduleCron", "0 3 * *"), ("scheduleCron", "0 3 * * *; reboot"), ("retention", 0)],
)
def test_bad_schedule_or_retention_is_refused_with_a_message(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=r"cron schedule|greater than or equal"):
        EtcdSnapshots.model_validate({field: value})


def test_listing_is_parsed_newest_first_with_sizes_as_quantities() -> None:
    out = snapshots.parse_list(
        _doc(
            _item("a-srv-1-1", "srv-1", created="2025-01-01T00:00:00Z"),
            _item("b-srv-2-2", "srv-2", size="3148Ki", created="2025-01-02T00:00:00Z"),
        )
    )
    assert [(e.name, e.node, e.size) for e in out] == [
        ("b-srv-2-2", "srv-2", 3148 * 1024),
        ("a-srv-1-1", "srv-1", 2174976),
    ]
    assert out[1].location == f"file://{SNAP_DIR}/a-srv-1-1"


@pytest.mark.parametrize(
    "stdout",
    ["not json", "[]", json.dumps({"items": "x"}), "{" * 100_000, "[" * 100_000],
)
def test_a_listing_that_is_not_one_is_refused(stdout: str) -> None:
    with pytest.raises(errors.GuestInputRejected) as caught:
        snapshots.parse_list(stdout)
    assert len(caught.value.message) < 300


def test_hostile_entries_are_left_out_and_the_list_is_bounded() -> None:
    hostile = [
        _item("x" * 300, "srv-1"),  # name too long
        _item("bad\nname", "srv-1"),
        _item("ok-1", "Srv_1"),  # not a node name
        {
            **_item("ok-2", "srv-1"),
            "spec": {"snapshotName": "ok-2", "nodeName": "srv-1", "location": "javascript:x"},
        },
        _item("ok-3", "srv-1", size="9" * 40),  # size out of range: kept, size unknown
        _item("ok-4", "srv-1", created="yesterday"),
        {"spec": "nope"},
        "string",
    ]
    many = [_item(f"s-{i}", "srv-1", created=f"2025-01-01T00:{i % 60:02d}:00Z") for i in range(200)]
    out = snapshots.parse_list(_doc(*hostile, *many))
    names = {e.name for e in out}
    assert len(out) == snapshots.MAX_LISTED
    assert not names & {"x" * 300, "bad\nname", "ok-1", "ok-2"}
    few = {e.name: e for e in snapshots.parse_list(_doc(*hostile))}
    assert set(few) == {"ok-3", "ok-4"}
    assert few["ok-3"].size is None and few["ok-3"].created_time is not None
    assert few["ok-4"].created_time is None and few["ok-4"].size == 2174976


# ----- in a pass -------------------------------------------------------------------------------------


class SnapSsh(FakeSsh):
    """FakeSsh that also answers the snapshot, systemctl and cluster-reset commands, and records them."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[tuple[str, str, str | None]] = []  # (host, command, stdin)
        self.saved: dict[str, list[str]] = {}  # host -> snapshot names
        self.fail: dict[str, int] = {}  # command prefix -> exit status

    async def run(
        self, target: SshTarget, command: str, *, input: str | None = None, **kw: Any
    ) -> CommandResult:
        if command == "sh -s" and input and input.startswith(("k3s server", "systemctl ", "rm -rf")):
            command, input = input, None  # a restore step's guest job: fake_jobs runs its script so
        mine = command.startswith(("k3s ", "systemctl ", "rm -rf")) or (
            command == "sh -s" and input and "K3SD_CONFIG_EOF" in input
        )
        if not mine:
            return await super().run(target, command, input=input, **kw)
        host = self._check(target)
        self.commands.append((target.host, command, input))
        code = next((c for p, c in self.fail.items() if command.startswith(p)), 0)
        if code:
            return host.result(code, "", "FATA boom")
        if command.startswith("k3s etcd-snapshot save --name "):
            name = f"{command.rsplit(' ', 1)[1]}-node-{len(self.commands)}"
            self.saved.setdefault(target.host, []).append(name)
            return host.result(0, "", f"INFO[0000] Snapshot {name} saved.\n")
        if command == snapshots.LIST_COMMAND:
            items = [_item(n, self.node_of[h]) for h, names in self.saved.items() for n in names]
            return host.result(0, _doc(*items))
        if command == "sh -s":
            return host.result(0, "written\n")
        return host.result(0)

    node_of: dict[str, str] = {}


def _world(ssh: SnapSsh | None = None) -> tuple[World, SnapSsh]:
    """The reconcile tests' world with SnapSsh in every port that reaches the guests."""
    w, ssh = World(), ssh or SnapSsh()
    w.ssh = ssh
    w.target = FakeTarget(ssh)
    w.agents = FakeAgents(w.objects, ssh)
    w.deps.ssh, w.deps.target = ssh, w.target
    w.deps.proxmox = lambda _credentials: w.agents  # type: ignore[assignment,return-value]
    return w, ssh


async def _ready_world(ssh: SnapSsh | None = None, **spec: Any) -> tuple[World, dict[str, Any], SnapSsh]:
    w, ssh = _world(ssh)
    body = cluster_body(servers=3, agents=1, etcdSnapshots=spec or {"retention": 3})
    await w.pass_(body)
    w.boot()
    SnapSsh.node_of = {ip: f"demo-server-{i}" for i, ip in enumerate(("10.0.0.10", "10.0.0.11", "10.0.0.12"))}
    out = await w.pass_(body)
    assert out.error is None and out.status["phase"] == "Ready", out.status["conditions"]
    return w, body, ssh


async def test_annotation_takes_one_snapshot_per_value_and_status_lists_it() -> None:
    w, body, ssh = await _ready_world()
    configs = [(h, i) for h, c, i in ssh.commands if c == "sh -s"]
    assert {h for h, _ in configs} == {"10.0.0.10", "10.0.0.11", "10.0.0.12"}  # servers only
    assert all(i and "etcd-snapshot-retention: 3" in i for _, i in configs)
    body["metadata"]["annotations"] = {snapshots.SNAPSHOT_REQUEST: "Before Upgrade!"}
    out = await w.pass_(body)
    saves = [(h, c) for h, c, _ in ssh.commands if "save" in c]
    assert saves == [("10.0.0.10", "k3s etcd-snapshot save --name before-upgrade")]  # the init server
    assert [e.reason for e in out.events].count("SnapshotTaken") == 1
    assert out.status["snapshotRequest"] == "Before Upgrade!"
    listed = out.status["etcdSnapshots"]
    assert [s["node"] for s in listed] == ["demo-server-0"] and listed[0]["name"].startswith(
        "before-upgrade-"
    )
    await w.pass_(body)
    assert len([c for _, c, _ in ssh.commands if "save" in c]) == 1  # handled once


async def test_s3_keys_only_travel_in_the_config_file_on_stdin() -> None:
    w, ssh = _world()
    w.objects.secrets[(NS, "s3")] = {
        "data": {"accessKey": b"AKIAEXAMPLE1", "secretKey": b"very-secret-key"},
        "labels": {},
        "owner": None,
    }
    spec = {"s3": {"bucket": "backups", "credentialsSecretRef": {"name": "s3"}}}
    body = cluster_body(servers=1, agents=0, etcdSnapshots=spec)
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert out.error is None, out.status["conditions"]
    assert all("very-secret-key" not in c for _, c, _ in ssh.commands)  # never on a command line
    assert any(i and 'etcd-s3-secret-key: "very-secret-key"' in i for _, _, i in ssh.commands)
    assert "very-secret-key" not in json.dumps(out.status) + repr(out.events)
    del w.objects.secrets[(NS, "s3")]
    missing = await w.pass_(body)
    assert missing.error is not None and missing.error.reason == "SecretNotFound"


async def test_restore_runs_the_k3s_steps_in_order_resumes_and_runs_once() -> None:
    w, body, ssh = await _ready_world()
    body["metadata"]["annotations"] = {snapshots.SNAPSHOT_REQUEST: "pre"}
    await w.pass_(body)
    name = body["status"]["etcdSnapshots"][0]["name"]
    ssh.commands.clear()
    body["spec"]["etcdSnapshots"]["restore"] = {"name": name, "requestId": "r1"}
    outcomes = []
    for _ in range(15):
        outcomes.append(await w.pass_(body))
        if body["status"]["etcdRestore"]["step"] == "Complete":
            break
    steps = [(h, c) for h, c, _ in ssh.commands if c.startswith(("systemctl", "k3s server", "rm -rf"))]
    path = f"{SNAP_DIR}/{name}"
    assert steps == [
        ("10.0.0.11", "systemctl stop k3s"),
        ("10.0.0.12", "systemctl stop k3s"),
        ("10.0.0.10", "systemctl stop k3s"),
        ("10.0.0.10", f"k3s server --cluster-reset --cluster-reset-restore-path={path}"),
        ("10.0.0.10", "systemctl start k3s"),
        ("10.0.0.11", "rm -rf /var/lib/rancher/k3s/server/db && systemctl start k3s"),
        ("10.0.0.12", "rm -rf /var/lib/rancher/k3s/server/db && systemctl start k3s"),
        ("10.0.0.13", "systemctl restart k3s-agent"),
    ]
    restore = body["status"]["etcdRestore"]
    assert restore["step"] == "Complete" and restore["rejoined"] == ["demo-server-1", "demo-server-2"]
    reasons = [e.reason for o in outcomes for e in o.events]
    for reason in ("RestoreRequested", "ServersStopped", "ClusterReset", "ServerRejoined", "RestoreComplete"):
        assert reason in reasons
    assert outcomes[0].status["phase"] == "Restoring"
    assert next(c for c in body["status"]["conditions"] if c["type"] == "EtcdRestored")["status"] == "True"
    ssh.commands.clear()
    await w.pass_(body)
    assert not [
        c for _, c, _ in ssh.commands if c.startswith(("systemctl", "k3s server"))
    ]  # once per requestId
    body.pop("status")  # a lost status (a backup restore, a move) rolls nothing back again
    ssh.commands.clear()
    await w.pass_(body)
    assert not [c for _, c, _ in ssh.commands if c.startswith(("systemctl", "k3s server", "rm"))]
    assert body["status"]["etcdRestore"]["step"] == "Complete"


async def test_restore_resumes_at_the_recorded_step_and_a_missing_snapshot_fails_clearly() -> None:
    w, body, ssh = await _ready_world()
    body["spec"]["etcdSnapshots"]["restore"] = {"name": "pre-node-1", "requestId": "r2"}
    body["status"]["etcdRestore"] = {
        "requestId": "r2",
        "name": "pre-node-1",
        "step": "StartingInit",
        "path": f"{SNAP_DIR}/pre-node-1",
    }
    ssh.commands.clear()
    await w.pass_(body)  # an operator restarted mid-restore: no second stop or reset
    await w.pass_(body)
    assert [c for _, c, _ in ssh.commands if c.startswith(("systemctl", "k3s server", "rm"))] == [
        "systemctl start k3s",
        "rm -rf /var/lib/rancher/k3s/server/db && systemctl start k3s",
    ]
    assert body["status"]["etcdRestore"]["rejoined"] == ["demo-server-1"]
    body["spec"]["etcdSnapshots"]["restore"] = {"name": "nope", "requestId": "r3"}
    failed = await w.pass_(body)
    assert failed.error is not None and failed.error.reason == "SnapshotNotFound"
    assert "not on the init server demo-server-0" in failed.error.message
    assert body["status"]["etcdRestore"]["step"] == "Failed"
    assert [e.reason for e in failed.events].count("RestoreFailed") == 1
    ssh.commands.clear()
    again = await w.pass_(body)
    assert again.error is None and not [c for _, c, _ in ssh.commands if c.startswith("systemctl")]
