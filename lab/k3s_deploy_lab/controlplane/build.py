"""Build kube-apiserver, kubectl and etcd from Go modules, once, cached by version.

No package index ships these binaries, but the Go module proxy serves their sources. Neither
``k8s.io/kubernetes`` nor ``go.etcd.io/etcd/server/v3`` can be ``go install``-ed directly (their
go.mod files carry ``replace`` directives), so each is built from a throw-away wrapper module that
requires the upstream module and, for Kubernetes, points every staging module at its published
``v0.Y.Z`` release. Binaries land in ``<cache>/bin/<name>-<version>``; a file lock makes concurrent
callers (parallel test sessions, ``lab build`` next to ``lab up``) build each binary only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A control-plane binary could not be built (Go missing, proxy unreachable, compile error)."""


def _stderr_log(message: str) -> None:
    print(f"[build] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """``${K3SD_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/k3s-deploy}``."""
    explicit = os.environ.get("K3SD_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "k3s-deploy"


def kubernetes_version() -> str:
    return _vee(os.environ.get("K3SD_KUBERNETES_VERSION") or KUBERNETES_VERSION)


def etcd_version() -> str:
    return _vee(os.environ.get("K3SD_ETCD_VERSION") or ETCD_VERSION)


def _vee(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


@dataclass(frozen=True)
class Target:
    """One binary: where its main package lives and how to stamp its version."""

    name: str
    module: str
    version: str
    package: str

    @property
    def path(self) -> Path:
        return cache_dir() / "bin" / f"{self.name}-{self.version}"


def targets() -> list[Target]:
    kube, etcd = kubernetes_version(), etcd_version()
    return [
        Target("kube-apiserver", "k8s.io/kubernetes", kube, "k8s.io/kubernetes/cmd/kube-apiserver"),
        Target("kubectl", "k8s.io/kubernetes", kube, "k8s.io/kubernetes/cmd/kubectl"),
        Target("etcd", "go.etcd.io/etcd/server/v3", etcd, "go.etcd.io/etcd/server/v3"),
    ]


def cached_binaries() -> dict[str, Path] | None:
    """The binaries if all are already built, else None (never builds)."""
    found = {t.name: t.path for t in targets()}
    return found if all(_usable(p) for p in found.values()) else None


def ensure_binaries(*, log: Log = _stderr_log) -> dict[str, Path]:
    """Return name -> path of kube-apiserver, kubectl and etcd, building what is missing."""
    ready = cached_binaries()
    if ready is not None:
        return ready
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is needed to build the local control plane (kube-apiserver, kubectl, etcd); install Go, "
            "or point the lab at an existing cluster with --kubeconfig"
        )
    (cache_dir() / "bin").mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir() / "bin" / ".build.lock", log):
        for target in targets():
            if _usable(target.path):
                continue
            _build(go, target, log)
    return {t.name: t.path for t in targets()}


def etcdutl_target() -> Target:
    """etcdutl (snapshot restore), built on demand only: the K3s stand-in's cluster-reset needs it."""
    return Target("etcdutl", "go.etcd.io/etcd/etcdutl/v3", etcd_version(), "go.etcd.io/etcd/etcdutl/v3")


def ensure_etcdutl(*, log: Log = _stderr_log) -> Path:
    """The etcdutl binary of the lab's etcd version, building it the first time (seconds to a minute)."""
    target = etcdutl_target()
    if _usable(target.path):
        return target.path
    go = shutil.which("go")
    if go is None:
        raise BuildError("Go is needed to build etcdutl (restoring an etcd snapshot); install Go")
    (cache_dir() / "bin").mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir() / "bin" / ".build.lock", log):
        if not _usable(target.path):
            _build(go, target, log)
    return target.path


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@contextlib.contextmanager
def _locked(path: Path, log: Log) -> Iterator[None]:
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is building; waiting for {path}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CGO_ENABLED="0",  # static binaries, no C toolchain needed
        GOWORK="off",  # a go.work above the cache dir must not leak in
        GOFLAGS="-mod=mod",
    )
    return env


def _go(go: str, args: list[str], cwd: Path, *, capture: bool = False) -> str:
    """Run ``go args`` in ``cwd``; Go's own progress goes to stderr unless captured."""
    proc = subprocess.run(
        [go, *args],
        cwd=cwd,
        env=_go_env(),
        stdout=subprocess.PIPE if capture else sys.stderr,
        stderr=subprocess.PIPE if capture else sys.stderr,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip()[-2000:] if capture else "see the output above"
        raise BuildError(f"`go {' '.join(args[:3])} ...` failed in {cwd}: {detail}")
    return proc.stdout if capture else ""


def _wrapper(go: str, target: Target, log: Log) -> Path:
    """A wrapper module requiring ``target.module`` (kept per module and version, reused)."""
    slug = target.module.replace("/", "_")
    module_dir = cache_dir() / "build" / f"{slug}-{target.version}"
    stamp = module_dir / ".resolved"
    if stamp.exists():
        return module_dir
    shutil.rmtree(module_dir, ignore_errors=True)
    module_dir.mkdir(parents=True)
    _go(go, ["mod", "init", "k3sdeploy.invalid/wrapper"], module_dir, capture=True)
    info = json.loads(
        _go(go, ["mod", "download", "-json", f"{target.module}@{target.version}"], module_dir, capture=True)
    )
    edits = [f"-require={target.module}@{target.version}"]
    edits += [f"-replace={m}={m}@{v}" for m, v in _staging_replaces(Path(info["GoMod"]), target.version)]
    _go(go, ["mod", "edit", *edits], module_dir, capture=True)
    imports = "".join(
        f'\t_ "{t.package}"\n' for t in [*targets(), etcdutl_target()] if t.module == target.module
    )
    (module_dir / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n")
    # The proxy's .info file holds the release's commit time: the honest build date.
    (module_dir / "release-time").write_text(json.loads(Path(info["Info"]).read_text()).get("Time", ""))
    log(f"resolving dependencies of {target.module}@{target.version}")
    # tidy pins every staging module at v0.Y.Z in go.mod; resolving lazily (`go list -deps`) leaves
    # them at v0.0.0 => v0.Y.Z, which changes build IDs and defeats Go's build cache across builds.
    _go(go, ["mod", "tidy"], module_dir)
    stamp.touch()
    return module_dir


def _build(go: str, target: Target, log: Log) -> None:
    started = time.monotonic()
    log(f"building {target.name} {target.version} from Go modules (first time only; several minutes)")
    module_dir = _wrapper(go, target, log)
    log(f"compiling {target.package}")
    out = target.path.with_name(f".{target.path.name}.partial")
    parallel = str(max(1, min(os.cpu_count() or 1, 4)))  # each compile may take ~1 GiB of memory
    ldflags = _ldflags(target, (module_dir / "release-time").read_text().strip())
    _go(
        go,
        ["build", "-p", parallel, "-trimpath", "-ldflags", ldflags, "-o", str(out), target.package],
        module_dir,
    )
    out.chmod(0o755)
    os.replace(out, target.path)
    seconds = time.monotonic() - started
    go_version = _go(go, ["env", "GOVERSION"], module_dir, capture=True).strip()
    target.path.with_name(f"{target.path.name}.json").write_text(
        json.dumps(
            {
                "version": target.version,
                "module": target.module,
                "build_seconds": round(seconds, 1),
                "go": go_version,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"built {target.path} in {seconds:.0f}s")


_STAGING = re.compile(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", re.MULTILINE)


def _staging_replaces(gomod: Path, version: str) -> list[tuple[str, str]]:
    """For Kubernetes: every ``k8s.io/X => ./staging/...`` becomes ``k8s.io/X@v0.Y.Z``."""
    modules = _STAGING.findall(gomod.read_text())
    if not modules:
        return []
    staged = "v0." + version.removeprefix("v").split(".", 1)[1]
    return [(module, staged) for module in modules]


def _ldflags(target: Target, build_date: str) -> str:
    """Strip debug info and, for Kubernetes, stamp the real release so ``/version`` is honest."""
    flags = ["-s", "-w"]
    if target.module == "k8s.io/kubernetes":
        major, minor = target.version.removeprefix("v").split(".")[:2]
        values = {
            "gitVersion": target.version,
            "gitMajor": major,
            "gitMinor": minor,
            "gitTreeState": "clean",
            "gitCommit": "",
            "buildDate": build_date or "1970-01-01T00:00:00Z",
        }
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [f"-X {package}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)
