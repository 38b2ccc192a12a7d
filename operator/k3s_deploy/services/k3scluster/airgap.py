"""Air-gapped installs with ``fetchFrom: Operator``: the operator downloads, the nodes only receive.

For sites where the nodes cannot reach the download location but the operator can. Before a node's
install the operator fetches the installer, the k3s binary and the optional images tarball (once per
URL: the fetcher caches, so N nodes cost one download each) and copies them over SSH: the binary to
``/usr/local/bin/k3s`` (0755), the images into K3s's images directory, the installer to a fresh
random name in a root-only directory (``STAGING_DIR``, not the world-writable ``/tmp``) that the install
script runs (``INSTALL_K3S_SKIP_DOWNLOAD=true``) and removes.
"""

from __future__ import annotations

import asyncio
import re
import secrets

from k3s_deploy import errors, metrics
from k3s_deploy.ports.artefacts import Artefact, ArtefactFetcher
from k3s_deploy.ports.ssh import SshRunner, SshTarget
from k3s_deploy.services.k3scluster import install

STAGING_DIR = "/var/lib/rancher/k3s-deploy"
# Caps per artefact, well above today's files (install.sh ~40 KiB, k3s ~70 MiB, the images tarball
# ~170 MiB as .tar.zst and ~650 MiB as .tar); the fetcher's budget caps them all together as well.
MAX_INSTALLER_BYTES = 4 << 20
MAX_BINARY_BYTES = 256 << 20
MAX_IMAGES_BYTES = 1 << 30


_DEFAULT_IMAGES_NAME = "k3s-airgap-images.tar"
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def images_path(url: str) -> str:
    """Where the images tarball goes on a node: its URL's file name (K3s reads the compression from
    the extension) when that is a plain name, else a fixed one, so a URL ending in ``/..`` or holding
    odd characters can never name a path outside K3s's images directory."""
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not _SAFE_FILE_NAME.fullmatch(name):
        name = _DEFAULT_IMAGES_NAME
    return f"{install.AIRGAP_IMAGES_DIR}/{name}"


async def stage(
    ssh: SshRunner,
    fetcher: ArtefactFetcher | None,
    name: str,
    target: SshTarget,
    source: install.InstallSource,
    *,
    timeout_s: float,
) -> str | None:
    """Put the artefacts on node ``name``; returns the installer's path there (None: nothing to stage,
    the install script downloads for itself)."""
    if not source.staged_by_operator:
        return None
    if fetcher is None or source.binary_url is None:
        raise errors.InvalidSpec(
            "installSource.airGap.fetchFrom: Operator needs binaryURL and installerURL, and an operator "
            "built with an artefact fetcher",
            reason="UnsupportedInstallSource",
        )
    sums = {source.script_url: source.script_sha256, source.binary_url: source.binary_sha256}
    if source.images_url:
        sums[source.images_url] = source.images_sha256
    missing = [url for url, digest in sums.items() if not digest]
    if missing:
        raise errors.InvalidSpec(
            f"installSource.airGap.fetchFrom: Operator needs the sha256 of every artefact; missing for "
            f"{', '.join(missing)} (set installerSHA256, binarySHA256 and, with imagesURL, imagesSHA256)",
            reason="ArtefactChecksumMissing",
        )
    wanted = [
        fetcher.fetch(source.script_url, max_bytes=MAX_INSTALLER_BYTES, sha256=source.script_sha256 or ""),
        fetcher.fetch(source.binary_url, max_bytes=MAX_BINARY_BYTES, sha256=source.binary_sha256 or ""),
    ]
    if source.images_url:
        wanted.append(
            fetcher.fetch(source.images_url, max_bytes=MAX_IMAGES_BYTES, sha256=source.images_sha256 or "")
        )
    fetched: list[Artefact] = list(await asyncio.gather(*wanted))
    installer, binary, *images = fetched
    installer_path = f"{STAGING_DIR}/install-{secrets.token_hex(8)}.sh"
    copies = [(binary, install.AIRGAP_BINARY, 0o755)]
    copies += [(image, images_path(image.url), 0o644) for image in images]
    copies.append((installer, installer_path, 0o700))
    for artefact, remote, mode in copies:
        try:
            with metrics.time_ssh("upload"):
                await ssh.upload(target, artefact.path, remote, mode=mode, timeout_s=timeout_s)
        except errors.K3sDeployError as exc:
            exc.message = f"node {name}: copying {artefact.url} to {remote}: {exc.message}"
            exc.args = (exc.message,)
            raise
    return installer_path
