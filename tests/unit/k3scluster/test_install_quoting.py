"""Spec strings reach the guest's shell quoted: the rendered install script, run by a real ``sh``,
hands every argument and URL over as one word and runs nothing hidden in them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from k3s_deploy.services.k3scluster.install import InstallSource, InstallStep, K3sSettings, render_script

RECORDER = """#!/bin/sh
for a in "$@"; do printf '%s\\0' "$a"; done > "$ARGS_FILE"
"""
# curl stand-in: write the recorder to the -o target, and record the URL it was asked for.
FAKE_CURL = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    -*) shift ;;
    *) printf '%s' "$1" > "$URL_FILE"; shift ;;
  esac
done
cp "$RECORDER" "$out"
"""


def _hostile(tmp: Path) -> list[str]:
    return [
        f"--node-label=x;touch {tmp}/pwned-semicolon",
        f"--node-label=y=$(touch {tmp}/pwned-subst)",
        f"--node-taint=`touch {tmp}/pwned-backtick`:NoSchedule",
        "--node-label=it's=quoted",
        f"--data-dir={tmp}/a b|touch {tmp}/pwned-pipe",
    ]


def _run(script: str, tmp: Path) -> tuple[list[str], str]:
    (tmp / "bin").mkdir(exist_ok=True)
    (tmp / "recorder.sh").write_text(RECORDER)
    curl = tmp / "bin" / "curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(0o755)
    env = {
        "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}",
        "ARGS_FILE": str(tmp / "args"),
        "URL_FILE": str(tmp / "url"),
        "RECORDER": str(tmp / "recorder.sh"),
    }
    subprocess.run(["sh", "-s"], input=script, text=True, env=env, cwd=tmp, check=True, timeout=30)
    args = (tmp / "args").read_bytes().decode().split("\0")[:-1]
    url = (tmp / "url").read_text() if (tmp / "url").exists() else ""
    return args, url


@pytest.mark.parametrize("role", ["server", "agent"])
def test_args_and_urls_reach_the_installer_as_single_words(tmp_path: Path, role: str) -> None:
    hostile = _hostile(tmp_path)
    url = f"https://get.example/install.sh?x=1;touch%20{tmp_path}/pwned-url&y=$(touch {tmp_path}/pwned-url2)"
    settings = K3sSettings(
        version="v1.31.4+k3s1",
        server_args=tuple(hostile),
        agent_args=tuple(hostile),
        tls_sans=("k3s.example.internal",),
        source=InstallSource(script_url=url),
    )
    step = InstallStep("node-1", role, "single" if role == "server" else "agent", "https://10.0.0.10:6443")
    script = render_script(step, settings, token="t0k3n'$(touch pwned-token)", node_ip="10.0.0.11", sans=[])
    args, fetched = _run(script, tmp_path)
    assert args[0] == role and args[-len(hostile) :] == hostile
    assert fetched == url
    assert not list(tmp_path.glob("pwned*")), "a command hidden in a spec string ran"


def test_operator_staged_installer_path_is_quoted_too(tmp_path: Path) -> None:
    hostile = _hostile(tmp_path)
    installer = tmp_path / "staged install.sh"
    installer.write_text(RECORDER)
    settings = K3sSettings(
        version="v1.31.4+k3s1",
        server_args=tuple(hostile),
        source=InstallSource(mode="airgap", fetch_from="Operator"),
    )
    script = render_script(
        InstallStep("node-1", "server", "single"),
        settings,
        token="secret",
        node_ip=None,
        sans=[],
        installer_path=str(installer),
    )
    args, _ = _run(script, tmp_path)
    assert args[-len(hostile) :] == hostile
    assert not list(tmp_path.glob("pwned*"))
