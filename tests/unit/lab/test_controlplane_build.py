"""Pure parts of the control-plane build and process helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3s_deploy_lab.controlplane import build, processes

UPSTREAM_GOMOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/apimachinery v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
\tk8s.io/cri-client => ./staging/src/k8s.io/cri-client
)

replace github.com/example/thing => github.com/example/fork v1.0.0
"""


def test_staging_replaces_point_at_published_releases(tmp_path: Path) -> None:
    gomod = tmp_path / "go.mod"
    gomod.write_text(UPSTREAM_GOMOD)
    assert build._staging_replaces(gomod, "v1.37.2") == [
        ("k8s.io/api", "v0.37.2"),
        ("k8s.io/apimachinery", "v0.37.2"),
        ("k8s.io/cri-client", "v0.37.2"),
    ]


def test_modules_without_staging_get_no_replaces(tmp_path: Path) -> None:
    gomod = tmp_path / "go.mod"
    gomod.write_text("module go.etcd.io/etcd/server/v3\n\nreplace go.etcd.io/etcd/api/v3 => ../api\n")
    assert build._staging_replaces(gomod, "v3.6.16") == []


def test_kubernetes_ldflags_stamp_the_release() -> None:
    target = build.Target("kubectl", "k8s.io/kubernetes", "v1.37.2", "k8s.io/kubernetes/cmd/kubectl")
    flags = build._ldflags(target, "2026-10-27T12:01:04Z")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.37.2" in flags
        assert f"-X {package}.gitMajor=1" in flags
        assert f"-X {package}.gitMinor=37" in flags
        assert f"-X {package}.buildDate=2026-10-27T12:01:04Z" in flags


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K3SD_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("K3SD_CACHE_DIR")
    assert build.cache_dir() == tmp_path / "xdg" / "k3s-deploy"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert build.cache_dir() == tmp_path / "home" / ".cache" / "k3s-deploy"


def test_binaries_are_keyed_by_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K3SD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SD_KUBERNETES_VERSION", "1.36.3")
    paths = {t.name: t.path for t in build.targets()}
    assert paths["kube-apiserver"] == tmp_path / "bin" / "kube-apiserver-v1.36.3"
    assert paths["kubectl"] == tmp_path / "bin" / "kubectl-v1.36.3"
    assert paths["etcd"] == tmp_path / "bin" / f"etcd-{build.ETCD_VERSION}"
    assert build.cached_binaries() is None
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    assert build.cached_binaries() == paths
    # Already built: ensure_binaries() returns them without needing Go at all.
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    assert build.ensure_binaries() == paths


def test_missing_go_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K3SD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    with pytest.raises(build.BuildError, match="--kubeconfig"):
        build.ensure_binaries()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.42.0.7", "127.255.255.254"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert processes.require_loopback(host) == host


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "192.168.1.10", "::1", "::"])
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        processes.require_loopback(host)


FAKE_GO = r"""#!{python}
# A stand-in for `go` that does what the build asks of it, slowly, and counts builds.
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
root = Path(os.environ["FAKE_GO_ROOT"])
if args[:2] == ["mod", "download"]:
    (root / "upstream.mod").write_text("module x\n")
    (root / "upstream.info").write_text(json.dumps({{"Version": "v1", "Time": "2026-01-01T00:00:00Z"}}))
    print(json.dumps({{"GoMod": str(root / "upstream.mod"), "Info": str(root / "upstream.info")}}))
elif args[:2] == ["mod", "init"]:
    Path("go.mod").write_text("module wrapper\n")
elif args[0] == "build":
    out = Path(args[args.index("-o") + 1])
    with (root / "builds").open("a") as f:
        f.write(args[-1] + "\n")
    time.sleep(0.5)
    out.write_text("#!/bin/sh\n")
elif args[:2] == ["env", "GOVERSION"]:
    print("go0.0-fake")
"""


def test_concurrent_callers_build_each_binary_once(tmp_path: Path) -> None:
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    go = fake_bin / "go"
    go.write_text(FAKE_GO.format(python=sys.executable))
    go.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "FAKE_GO_ROOT": str(tmp_path),
        "K3SD_CACHE_DIR": str(tmp_path / "cache"),
    }
    code = "from k3s_deploy_lab.controlplane.build import ensure_binaries; print(sorted(ensure_binaries()))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert all(out.strip() == "['etcd', 'kube-apiserver', 'kubectl']" for out, _ in results)
    assert sorted((tmp_path / "builds").read_text().split()) == sorted(t.package for t in build.targets())
    assert any("another process is building" in err for _, err in results)
