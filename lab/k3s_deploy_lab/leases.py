"""Loopback blocks for lab guests: each lab (and each test simulator) leases a /22 of its own.

Every simulated VM gets an address from its simulator's DHCP range, and its SSH server and (for a K3s
server) its API on :6443 bind there. Two labs handing out the same address collide on those binds, so
a block is leased: an exclusive ``flock`` on ``<lease dir>/<block>.lock`` held for as long as the lab
(or test) runs, released by the kernel when the holder dies. A block is only taken when nothing
listens in it either (a lab of an older version, or anything else bound there). ``claim`` is what
`lab up` runs before it starts anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# 127.2.0.0 - 127.250.255.255: clear of 127.0.x (everyday loopback) and 127.1.0.0/16 (the sample
# inventory's own range, for a simulator started without a lab).
FIRST, LAST = 2, 250
PREFIX = 22
LISTEN = "0A"


def lease_dir() -> Path:
    """Shared by every lab and test run on the machine (K3SD_LEASE_DIR overrides)."""
    path = Path(os.environ.get("K3SD_LEASE_DIR") or Path(tempfile.gettempdir()) / "k3s-deploy-leases")
    path.mkdir(mode=0o1777, parents=True, exist_ok=True)
    return path


def listeners() -> list[tuple[ipaddress.IPv4Address | None, int]]:
    """(address, port) of every listening TCP socket; None for a wildcard (0.0.0.0 or [::])."""
    found: list[tuple[ipaddress.IPv4Address | None, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] != LISTEN:
                    continue
                address, port = fields[1].split(":")
                found.append((_address(address), int(port, 16)))
    return found


def _address(hexed: str) -> ipaddress.IPv4Address | None:
    raw = bytes.fromhex(hexed)
    if len(raw) == 16:  # IPv6: four little-endian words; only :: and ::ffff:a.b.c.d matter here
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        if not any(words):
            return None
        mapped = ipaddress.IPv6Address(words).ipv4_mapped
        return mapped if mapped is not None else ipaddress.IPv4Address("0.0.0.1")  # not loopback v4
    address = ipaddress.IPv4Address(raw[::-1])
    return None if int(address) == 0 else address


def conflicts(block: ipaddress.IPv4Network) -> list[str]:
    """What already listens at an address in ``block``."""
    return sorted({f"{a}:{p}" for a, p in listeners() if a is not None and a in block})


def wildcard(ports: Iterable[int]) -> list[int]:
    """Which of ``ports`` something listens on at every address (0.0.0.0 or [::])."""
    wanted = set(ports)
    return sorted({p for a, p in listeners() if a is None and p in wanted})


@dataclass
class Lease:
    """A leased block; ``release`` (or the holder's exit) frees it."""

    network: ipaddress.IPv4Network
    handle: IO[str]

    def release(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.handle.close()


class BlockTaken(RuntimeError):
    """The block asked for is leased by another lab or has something listening in it."""


def try_lease(block: ipaddress.IPv4Network) -> Lease:
    """Lease exactly ``block`` or raise :class:`BlockTaken` saying who has it."""
    path = lease_dir() / f"{block.network_address}-{block.prefixlen}.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise BlockTaken(f"{block} is leased by {holder} (lock {path})") from None
    busy = conflicts(block)
    if busy:
        handle.close()
        raise BlockTaken(f"{block} is in use: something listens at {', '.join(busy[:5])}")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return Lease(block, handle)


def lease_block(*, attempts: int = 64, rng: random.Random | None = None) -> Lease:
    """A free /22 in 127.2.0.0 - 127.250.255.255, chosen at random so concurrent callers rarely race."""
    chooser = rng or random.SystemRandom()
    for _ in range(attempts):
        second, third = chooser.randint(FIRST, LAST), chooser.randrange(0, 256, 2 ** (32 - PREFIX - 8))
        with contextlib.suppress(BlockTaken):
            return try_lease(ipaddress.IPv4Network(f"127.{second}.{third}.0/{PREFIX}"))
    raise BlockTaken(f"no free /{PREFIX} loopback block after {attempts} tries; see {lease_dir()}")


K3S_API_PORT = 6443  # every simulated K3s server listens here, at its own address


def claim(directory: Path, components: Iterable[str], block: str | None = None) -> Lease | None:
    """Lease the block a lab in ``directory`` needs, or raise :class:`BlockTaken` saying what to do.

    The block is ``block`` when given, else the one this lab directory used before (its simulator
    keeps the VMs' addresses), else any free one. Labs without simulated guests need none.
    """
    if not {"pve", "guests"} & set(components):
        return None
    ports = [K3S_API_PORT]
    fixed_ssh = os.environ.get("K3SD_GUEST_SSH_PORT")
    if fixed_ssh:
        ports.append(int(fixed_ssh))
    taken = wildcard(ports)
    if taken:
        raise BlockTaken(
            f"something listens on port {', '.join(map(str, taken))} at every address (0.0.0.0 or [::]); "
            "the lab's guests must bind that port at their own loopback addresses. Stop it (a K3s or "
            "an apiserver on this machine?)" + (" or unset K3SD_GUEST_SSH_PORT" if fixed_ssh else "")
        )
    wanted = block or previous_block(directory)
    if wanted is None:
        return lease_block()
    try:
        return try_lease(ipaddress.IPv4Network(wanted))
    except BlockTaken as exc:
        raise BlockTaken(
            f"{exc}. Another lab (or test run) uses those guest addresses: stop it, or start this one "
            "in a fresh --dir or with --block 127.X.Y.0/22 (a free block is chosen when none is given)"
        ) from None


def previous_block(directory: Path) -> str | None:
    """The DHCP range of the simulator a previous run left in DIR/pve (its VMs keep those addresses)."""
    import yaml

    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        data = yaml.safe_load((directory / "pve" / "inventory.yaml").read_text())
        return str(data["dhcp"]["range"])
    return None
