"""Two labs on one machine do not collide: each leases its own loopback block for its guests, and
`lab up` refuses, before it starts anything, when the addresses it needs are taken."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from k3s_deploy_lab import leases

pytestmark = pytest.mark.integration


@pytest.fixture
def lease_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lease directory of this test's own, shared by the labs it starts (as /tmp's is by all)."""
    path = tmp_path / "leases"
    monkeypatch.setenv("K3SD_LEASE_DIR", str(path))
    return path


@pytest.fixture
def held() -> Iterator[list[leases.Lease]]:
    taken: list[leases.Lease] = []
    yield taken
    for lease in taken:
        lease.release()


def lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "k3s_deploy", "lab", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def test_a_leased_block_is_not_leased_again_until_released(lease_dir: Path, held: list[leases.Lease]) -> None:
    first = leases.lease_block(rng=random.Random(7))
    held.append(first)
    second = leases.lease_block(rng=random.Random(7))  # the same choices: must skip the held block
    held.append(second)
    assert first.network != second.network and not first.network.overlaps(second.network)
    assert first.network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    with pytest.raises(leases.BlockTaken, match="leased by pid"):
        leases.try_lease(first.network)
    first.release()
    again = leases.lease_block(rng=random.Random(7))
    held.append(again)
    assert again.network == first.network


def test_a_block_where_something_listens_is_not_leased(lease_dir: Path, held: list[leases.Lease]) -> None:
    block = ipaddress.IPv4Network("127.77.4.0/22")
    with socket.socket() as server:
        server.bind(("127.77.5.9", 0))
        server.listen()
        with pytest.raises(leases.BlockTaken, match=r"127\.77\.5\.9:\d+"):
            leases.try_lease(block)
    held.append(leases.try_lease(block))


def test_wildcard_listeners_are_read_from_both_tables() -> None:
    assert leases._address("00000000") is None  # 0.0.0.0
    assert leases._address("00000000000000000000000000000000") is None  # [::]
    assert str(leases._address("0100007F")) == "127.0.0.1"
    assert str(leases._address("0000000000000000FFFF00000100007F")) == "127.0.0.1"  # ::ffff:127.0.0.1


@pytest.mark.timeout(120)
def test_lab_up_refuses_before_starting_anything(
    lease_dir: Path, held: list[leases.Lease], tmp_path: Path
) -> None:
    other = leases.lease_block()  # another lab holds this block
    held.append(other)
    for detach in (["--detach"], []):
        directory = tmp_path / f"lab{len(detach)}"
        proc = lab(
            "up",
            "--dir",
            str(directory),
            "--components",
            "pve,guests",
            "--block",
            str(other.network),
            *detach,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert str(other.network) in proc.stderr and "--block" in proc.stderr, proc.stderr
        assert not directory.exists() or not list(directory.iterdir()), "started something anyway"

    # A lab directory keeps its block (its VMs keep their addresses): taken now, so refused too.
    directory = tmp_path / "old-lab"
    (directory / "pve").mkdir(parents=True)
    (directory / "pve" / "inventory.yaml").write_text(yaml.safe_dump({"dhcp": {"range": str(other.network)}}))
    proc = lab("up", "--dir", str(directory), "--components", "pve,guests", "--detach")
    assert proc.returncode == 1 and "leased by pid" in proc.stderr, proc.stderr
    assert not (directory / "pids").exists() and not (directory / "pve" / "pve.json").exists()


@pytest.mark.timeout(300)
def test_two_labs_side_by_side_get_their_own_blocks(lease_dir: Path, tmp_path: Path) -> None:
    dirs = [tmp_path / "one", tmp_path / "two"]
    try:
        for directory in dirs:
            proc = lab("up", "--dir", str(directory), "--components", "pve,guests", "--detach", timeout=240)
            assert proc.returncode == 0, proc.stdout + proc.stderr + (directory / "lab.log").read_text()
        ranges = [
            ipaddress.IPv4Network(yaml.safe_load((d / "pve" / "inventory.yaml").read_text())["dhcp"]["range"])
            for d in dirs
        ]
        assert not ranges[0].overlaps(ranges[1]), ranges
        # Each supervisor holds its lease while it runs: nobody else gets those addresses.
        for block in ranges:
            with pytest.raises(leases.BlockTaken):
                leases.try_lease(block)
    finally:
        for directory in dirs:
            lab("down", "--dir", str(directory))
    released = leases.try_lease(ranges[0])  # `lab down` gave the block back
    released.release()
