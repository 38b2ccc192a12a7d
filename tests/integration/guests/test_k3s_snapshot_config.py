"""The operator's etcd-snapshot pieces against the K3s stand-in in a real guest shell: the config.yaml.d
file it writes (0600, written once, K3s restarted only on a change) makes K3s take scheduled snapshots
with the retention asked for, and ``k3s etcd-snapshot ls -o json`` lists every server's snapshots in a
form the operator's strict parser reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncssh
import pytest

from fixtures.guests import LabGuest, eventually, lab_net, ssh_options
from k3s_deploy.api.etcd_snapshots import EtcdSnapshots
from k3s_deploy.services.k3scluster import snapshots

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
NET = lab_net()
StartGuest = Callable[..., Awaitable[LabGuest]]
V1 = "v1.31.4+k3s1"


async def _apply(guest: LabGuest, script: str) -> str:
    """Run the operator's script as it does: ``sh -s`` under sudo, the script on stdin."""
    async with asyncssh.connect(
        guest.address, guest.service.ssh_port, **ssh_options(guest.key, guest.user)
    ) as c:
        result = await c.run("sudo sh -s", input=script, check=True)
        return str(result.stdout).strip()


async def test_config_file_schedules_snapshots_and_ls_json_parses(start_guest: StartGuest) -> None:
    srv1 = await start_guest(341, f"{NET}41", name="srv-1")
    srv2 = await start_guest(342, f"{NET}42", name="srv-2")
    env = f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=secret-one"
    assert (await srv1.install_k3s("server", "--cluster-init", env=env)).exit_status == 0
    joined = await srv2.install_k3s("server", "--server", f"https://{NET}41:6443", env=env)
    assert joined.exit_status == 0, joined.stderr

    content = snapshots.render(snapshots.config_keys(EtcdSnapshots(schedule_cron="@every 1s", retention=2)))
    assert await _apply(srv1, snapshots.apply_script(content)) == "restarted"
    assert await _apply(srv1, snapshots.apply_script(content)) == "unchanged"
    mode = await srv1.run(f"sudo stat -c %a {snapshots.CONFIG_FILE}", check=True)
    assert mode.stdout.strip() == "600"

    async def scheduled_kept_at_two() -> bool:
        listing = await srv1.run("sudo ls /var/lib/rancher/k3s/server/db/snapshots 2>/dev/null || true")
        out = str(listing.stdout).split()
        scheduled = [n for n in out if n.startswith("etcd-snapshot-srv-1-")]
        assert len(scheduled) <= 2, out
        return len(scheduled) == 2

    await eventually(scheduled_kept_at_two, within=30)
    saved = await srv2.run("k3s etcd-snapshot save --name on-two")
    assert saved.exit_status == 0, saved.stderr

    listed = await srv1.run(snapshots.LIST_COMMAND, check=True)
    entries = snapshots.parse_list(str(listed.stdout))
    by_node = {(e.node, e.name.rsplit("-", 1)[0]) for e in entries}
    assert ("srv-2", "on-two-srv-2") in by_node
    assert ("srv-1", "etcd-snapshot-srv-1") in by_node
    for entry in entries:
        assert entry.location == f"file:///var/lib/rancher/k3s/server/db/snapshots/{entry.name}"
        assert entry.size is not None and entry.size > 1000  # real etcd snapshots
        assert entry.created_time is not None
    bad = await srv1.run("k3s etcd-snapshot ls -o xml")
    assert bad.exit_status == 1 and "invalid output format: xml" in bad.stderr

    assert await _apply(srv1, snapshots.apply_script(None)) == "restarted"
    assert (await srv1.run(f"sudo test -e {snapshots.CONFIG_FILE}")).exit_status == 1
