"""Item 6 (T1, root on a guest): what a guest sends back is bounded.

The tenant's own installer replaces ``k3s`` with a program whose ``--version`` never ends (one
endless line, so ``head -n 1`` on the guest passes it all). The operator reads at most its cap over
SSH, closes the command, and stalls the cluster with a reason; its memory stays flat. A second guest
reports a version far longer than status allows: the cluster still gets a readable status.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Lab
from .hostile_guest import HostileInstaller, fake_k3s_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MiB = 1 << 20
# The test stops the operator before it can hurt the (shared) machine: far above any bounded read.
RSS_GUARD = 256 * MiB
# What a bounded read may add: the cap per stream, SSH windows, a client or two, allocator slack.
RSS_ALLOWED_GROWTH = 64 * MiB


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _hostile(lab: Lab, stack: contextlib.ExitStack, name: str, version_output: str) -> None:
    script = "set -eu\n" + fake_k3s_binary(version_output) + "echo '[INFO]  k3s installed'\n"
    installer = stack.enter_context(HostileInstaller(script))
    manifest = lab.cluster(name, servers=1, agents=0)
    manifest["spec"]["k3s"]["installSource"] = {"script": {"url": installer.url}}
    lab.apply(manifest)


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


def test_endless_output_is_cut_at_the_cap(lab: Lab, stack: contextlib.ExitStack) -> None:
    pid = lab.operator.proc.pid
    time.sleep(3)  # the operator's first passes over an empty namespace
    baseline = peak = _rss(pid)
    _hostile(lab, stack, "endless", "yes 'k3s version v1.31.4+k3s1 (deadbeef)' | tr -d '\\n'")
    deadline = time.monotonic() + 300
    stalled = None
    while time.monotonic() < deadline:
        peak = max(peak, _rss(pid))
        if peak - baseline > RSS_GUARD:
            lab.operator.kill()
            pytest.fail(f"operator RSS grew by {(peak - baseline) / MiB:.0f} MiB reading a guest's output")
        stalled = lab.condition("endless", "Stalled")
        if stalled and stalled.get("status") == "True":
            break
        time.sleep(0.2)
    for _ in range(25):  # a few more passes: still bounded, no second read piling up
        peak = max(peak, _rss(pid))
        time.sleep(0.2)
    print(f"operator RSS baseline {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB")
    assert stalled and stalled["reason"] == "GuestOutputTooLarge", (stalled, lab.get("k3sc", "endless"))
    assert "endless-server-0" in stalled["message"] and "MiB" in stalled["message"]
    assert peak - baseline < RSS_ALLOWED_GROWTH, (baseline, peak)
    assert lab.events("endless", "GuestOutputTooLarge")


def test_oversized_version_gets_a_readable_status(lab: Lab, stack: contextlib.ExitStack) -> None:
    long_version = "v1.31.4+k3s1" + "a" * 300
    _hostile(lab, stack, "longver", f"printf 'k3s version {long_version} (deadbeef)\\n'")
    stalled = lab.wait_condition("longver", "Stalled", timeout=240)
    assert stalled["reason"] == "GuestValueInvalid", stalled
    assert "longver-server-0" in stalled["message"] and long_version not in stalled["message"]
    status = (lab.get("k3sc", "longver") or {})["status"]
    assert all(len(n.get("k3sVersion") or "") <= 64 for n in status["nodes"])
