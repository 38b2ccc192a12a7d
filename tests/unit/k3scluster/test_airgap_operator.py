"""installSource.airGap.fetchFrom: Operator: the operator fetches, copies over SSH, the node downloads nothing."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from k3s_deploy import errors
from k3s_deploy.ports.artefacts import Artefact
from k3s_deploy.ports.ssh import SshTarget
from k3s_deploy.services.k3scluster import airgap, install

from . import day2_world
from .fakes import FakeSsh
from .test_reconcile import V, World, cluster_body, cond

INSTALLER = "https://mirror.example/k3s/install.sh"
BINARY = f"https://mirror.example/k3s/releases/download/{V}/k3s"
IMAGES = f"https://mirror.example/k3s/releases/download/{V}/k3s-airgap-images-amd64.tar.zst"


class FetcherFake:
    """Serves files from a dict (url -> bytes) into tmp_path; counts calls; can fail on purpose."""

    def __init__(self, tmp: Path, files: dict[str, bytes]) -> None:
        self.tmp, self.files = tmp, files
        self.calls: list[tuple[str, int]] = []
        self.error: errors.K3sDeployError | None = None

    async def fetch(self, url: str, *, max_bytes: int, sha256: str) -> Artefact:
        self.calls.append((url, max_bytes))
        if self.error is not None:
            raise self.error
        data = self.files[url]
        path = self.tmp / hashlib.sha256(url.encode()).hexdigest()
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise errors.ArtefactRejected(f"{url} has sha256 {digest}, expected {sha256}")
        return Artefact(url=url, path=path, size=len(data), sha256=digest)


FILES = {INSTALLER: b"#!/bin/sh\necho installer\n", BINARY: b"\x7fELF k3s", IMAGES: b"images"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class UploadingSsh(FakeSsh):
    """FakeSsh, whose uploads land in each host's files: ``files`` shows them by host and remote path."""

    @property
    def files(self) -> dict[str, dict[str, tuple[bytes, int]]]:
        return {ip: dict(host.uploads) for ip, host in self.hosts.items() if host.uploads}


def airgap_body(servers: int, agents: int, **air: Any) -> dict[str, Any]:
    body = cluster_body(servers, agents)
    sums = {"installerSHA256": sha(FILES[INSTALLER]), "binarySHA256": sha(FILES[BINARY])}
    if "imagesURL" in air:
        sums["imagesSHA256"] = sha(FILES[IMAGES])
    body["spec"]["k3s"]["installSource"] = {
        "airGap": {"installerURL": INSTALLER, "binaryURL": BINARY, "fetchFrom": "Operator", **sums, **air}
    }
    return body


def world(tmp_path: Path) -> tuple[World, UploadingSsh, FetcherFake]:
    w = World()
    ssh = UploadingSsh()
    w.ssh = w.target.ssh = w.agents.ssh = ssh
    fetcher = FetcherFake(tmp_path, dict(FILES))
    w.deps.ssh, w.deps.artefacts = ssh, fetcher
    return w, ssh, fetcher


async def ready(w: World, body: dict[str, Any], passes: int = 6) -> Any:
    await w.pass_(body)
    w.boot()
    out = None
    for _ in range(passes):
        out = await w.pass_(body)
        if cond(out, "Ready")["status"] == "True":
            return out
    raise AssertionError(f"not Ready: {out.status if out else None}")


async def test_operator_copies_artefacts_and_the_nodes_download_nothing(tmp_path: Path) -> None:
    w, ssh, fetcher = world(tmp_path)
    body = airgap_body(1, 2, imagesURL=IMAGES)
    out = await ready(w, body)
    assert out.status["readyServers"] == 1 and out.status["readyAgents"] == 2
    assert not any(c["reason"] == "UnsupportedInstallSource" for c in out.status["conditions"])
    assert len(ssh.files) == 3
    for host, files in ssh.files.items():
        assert files[install.AIRGAP_BINARY] == (b"\x7fELF k3s", 0o755)
        assert files[f"{install.AIRGAP_IMAGES_DIR}/k3s-airgap-images-amd64.tar.zst"] == (b"images", 0o644)
        staged = [p for p in files if p.startswith(airgap.STAGING_DIR + "/")]
        assert len(staged) == 1 and files[staged[0]] == (b"#!/bin/sh\necho installer\n", 0o700)
        [script] = w.ssh.hosts[host].scripts
        assert "curl" not in script and "mirror.example" not in script
        assert "export INSTALL_K3S_SKIP_DOWNLOAD=true" in script
        assert f"installer={staged[0]}\n" in script and 'sh "$installer" ' in script
        # every upload happens before that node's install
        events = [what for h, what in ssh.log if h == host and what != "probe"]
        assert events[-1] == "install" and all(e.startswith("upload ") for e in events[:-1])
    # one staging path per node, never shared or predictable
    paths = {p for files in ssh.files.values() for p in files if p.startswith(airgap.STAGING_DIR)}
    assert len(paths) == 3
    # the fetcher is asked per node (it caches per URL), with the limits per kind of file
    assert {(u, m) for u, m in fetcher.calls} == {
        (INSTALLER, airgap.MAX_INSTALLER_BYTES),
        (BINARY, airgap.MAX_BINARY_BYTES),
        (IMAGES, airgap.MAX_IMAGES_BYTES),
    }


async def test_nothing_is_copied_again_once_installed(tmp_path: Path) -> None:
    w, ssh, fetcher = world(tmp_path)
    body = airgap_body(1, 0)
    await ready(w, body)
    uploads = [x for x in ssh.log if x[1].startswith("upload ")]
    calls = len(fetcher.calls)
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True"
    assert [x for x in ssh.log if x[1].startswith("upload ")] == uploads and len(fetcher.calls) == calls


async def test_fetch_from_node_still_downloads_on_the_node(tmp_path: Path) -> None:
    w, ssh, fetcher = world(tmp_path)
    body = airgap_body(1, 0)
    body["spec"]["k3s"]["installSource"]["airGap"]["fetchFrom"] = "Node"
    await ready(w, body)
    assert fetcher.calls == [] and ssh.files == {}
    [script] = next(iter(w.ssh.hosts.values())).scripts
    assert f"curl -sfL --retry 3 -o /usr/local/bin/k3s {BINARY}" in script


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (errors.ArtefactUnavailable(f"cannot download {BINARY}: ClientConnectorError"), True),
        (errors.ArtefactRejected(f"{BINARY} answered HTTP 404: check spec.k3s.installSource.airGap"), False),
        (
            errors.ArtefactRejected(f"cannot download {BINARY}: off", reason="FetchFromOperatorDisabled"),
            False,
        ),
        (errors.AddressRefused(f"refused to connect to {BINARY}", reason="LoopbackAddressRefused"), False),
    ],
)
async def test_fetch_failures_surface_with_their_reason(
    tmp_path: Path, error: errors.K3sDeployError, transient: bool
) -> None:
    w, ssh, fetcher = world(tmp_path)
    fetcher.error = error
    body = airgap_body(1, 0)
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert out.error is not None and out.error.transient is transient
    assert out.error.reason == error.reason
    kind = "Reconciling" if transient else "Stalled"
    assert cond(out, kind)["reason"] == error.reason
    assert BINARY in cond(out, kind)["message"]
    assert ssh.installs() == [] and ssh.files == {}


async def test_a_refused_copy_names_the_node_and_file(tmp_path: Path) -> None:
    w, ssh, _ = world(tmp_path)

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise errors.CommandFailed("cannot write: No space left on device", exit_status=1)

    ssh.upload = refuse  # type: ignore[method-assign]  # a full disk on the node
    body = airgap_body(1, 0)
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert out.error is not None and not out.error.transient
    message = cond(out, "Stalled")["message"]
    assert re.search(r"node demo-server-0: copying \S+ to /usr/local/bin/k3s: .*No space left", message)
    assert ssh.installs() == []


async def test_an_artefact_without_checksum_is_never_fetched(tmp_path: Path) -> None:
    """Objects stored before the schema asked for checksums still stall before any download."""
    _w, ssh, fetcher = world(tmp_path)
    source = install.InstallSource(
        mode="airgap", script_url=INSTALLER, binary_url=BINARY, fetch_from="Operator", script_sha256="a" * 64
    )
    target = SshTarget(host="10.0.0.10", port=22, user="root", private_key="k")
    with pytest.raises(errors.InvalidSpec) as refused:
        await airgap.stage(ssh, fetcher, "s0", target, source, timeout_s=5)
    assert refused.value.reason == "ArtefactChecksumMissing" and BINARY in refused.value.message
    assert fetcher.calls == [] and ssh.files == {}


def test_operator_mode_script_needs_the_staged_installer() -> None:
    settings = install.K3sSettings(
        version=V,
        source=install.InstallSource(
            mode="airgap", script_url=INSTALLER, binary_url=BINARY, fetch_from="Operator"
        ),
    )
    step = install.InstallStep("s0", "server", "single")
    with pytest.raises(ValueError, match="installer copied to the node"):
        install.render_script(step, settings, token="t", node_ip="10.0.0.10", sans=[])
    script = install.render_script(
        step, settings, token="t", node_ip="10.0.0.10", sans=[], installer_path="/var/lib/x/i.sh"
    )
    assert script.splitlines()[-1].startswith('sh "$installer" server ')
    assert "installer=/var/lib/x/i.sh" in script and "curl" not in script


class Day2UploadingSsh(day2_world.Ssh):
    """The day-2 fake (cordon/drain/install order) plus uploads, logged in the same op list."""

    def __init__(self, ops: list[tuple[str, str]]) -> None:
        super().__init__(ops)
        self.binaries: dict[str, bytes] = {}

    async def upload(
        self,
        target: SshTarget,
        local_path: Path,
        remote_path: str,
        *,
        mode: int = 0o644,
        sudo: bool | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        self._check(target)
        name = self.name_of(target.host)
        self.ops.append(("upload " + remote_path.rsplit("/", 1)[0], name))
        if remote_path == install.AIRGAP_BINARY:
            self.binaries[name] = await asyncio.to_thread(local_path.read_bytes)


async def test_an_upgrade_copies_the_new_binary_after_the_drain(tmp_path: Path) -> None:
    w = day2_world.World()
    ssh = Day2UploadingSsh(w.ops)
    w.ssh = w.target.ssh = w.deps.ssh = w.agents.ssh = ssh
    binary_b = BINARY.replace(V, day2_world.B)
    fetcher = FetcherFake(tmp_path, {INSTALLER: b"installer", BINARY: b"k3s A", binary_b: b"k3s B"})
    w.deps.artefacts = fetcher
    b = day2_world.body(1, 1)
    b["spec"]["k3s"]["installSource"] = {
        "airGap": {
            "installerURL": INSTALLER,
            "binaryURL": BINARY,
            "fetchFrom": "Operator",
            "installerSHA256": sha(b"installer"),
            "binarySHA256": sha(b"k3s A"),
        }
    }
    await w.pass_(b)
    out = await w.settle(b)
    assert day2_world.cond(out, "Ready")["status"] == "True", out.status["conditions"]
    members = ("demo-server-0", "demo-agent-0")
    by_ip = {w.ip(name): name for name in members}
    assert {by_ip.get(k, k): v for k, v in ssh.binaries.items()} == dict.fromkeys(members, b"k3s A")
    w.ops.clear()

    b["spec"]["k3s"]["version"] = day2_world.B
    b["spec"]["k3s"]["installSource"]["airGap"]["binaryURL"] = binary_b
    b["spec"]["k3s"]["installSource"]["airGap"]["binarySHA256"] = sha(b"k3s B")
    day2_world.bump(b)
    out = await w.settle(b)
    assert day2_world.cond(out, "Ready")["status"] == "True", out.status["conditions"]
    assert {by_ip.get(k, k): v for k, v in ssh.binaries.items()} == dict.fromkeys(members, b"k3s B")
    for name in members:
        mine = [op for op, n in w.ops if n == name]
        assert mine == [
            "cordon",
            "drain",
            "upload /usr/local/bin",
            f"upload {airgap.STAGING_DIR}",
            "install",
            "uncordon",
        ], (name, mine)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mirror/k3s/k3s-airgap-images-amd64.tar.zst", "k3s-airgap-images-amd64.tar.zst"),
        ("https://mirror/k3s/images.tar.gz?sig=abc#frag", "images.tar.gz"),
        ("https://mirror/k3s/..", "k3s-airgap-images.tar"),
        ("https://mirror/k3s/.hidden", "k3s-airgap-images.tar"),
        ("https://mirror/k3s/a%2F..%2Fb", "k3s-airgap-images.tar"),
    ],
)
def test_images_land_in_the_images_directory_whatever_the_url(url: str, expected: str) -> None:
    assert airgap.images_path(url) == f"{install.AIRGAP_IMAGES_DIR}/{expected}"
