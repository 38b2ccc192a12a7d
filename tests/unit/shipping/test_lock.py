"""The lock files the image installs from: complete for pyproject's dependencies, hashed, consistent.

Re-resolving needs the network (`./dev lock`); these checks catch a dependency added to
pyproject.toml without re-locking, and a pin without a hash (pip would refuse the whole file).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
LOCKS = ROOT / "requirements"


def pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of every ``name==version`` entry (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", lock.read_text())
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"{lock.name}: not a pinned requirement: {line[:80]}"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        out[name] = (match.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return out


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_pin_carries_hashes() -> None:
    for lock in ("operator.lock", "build.lock"):
        found = pins(LOCKS / lock)
        assert found, lock
        unhashed = [name for name, (_, hashes) in found.items() if not hashes]
        assert not unhashed, f"{lock}: pins without --hash (pip --require-hashes refuses them): {unhashed}"


def test_operator_lock_satisfies_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = pins(LOCKS / "operator.lock")
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = normal(req.name)
        assert name in locked, f"{req.name} is not in requirements/operator.lock: run ./dev lock"
        version = locked[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{req.name}=={version} in the lock does not satisfy {spec!r}: run ./dev lock"
        )
    # Nothing from the dev extras (test tools) reaches the image.
    dev = {normal(Requirement(s).name) for s in project["optional-dependencies"]["dev"]}
    assert not dev & set(locked), sorted(dev & set(locked))


def test_build_lock_holds_the_build_backend() -> None:
    system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    locked = pins(LOCKS / "build.lock")
    for spec in system["requires"]:
        req = Requirement(spec)
        assert normal(req.name) in locked, f"{req.name} missing from requirements/build.lock"
        assert req.specifier.contains(locked[normal(req.name)][0], prereleases=True)
