"""Talking to the members over SSH: probe what is installed (host key verified), run the K3s installs.

Each function works on one node and turns SSH outcomes into the error tree with the node's name in
the message, so a condition says exactly which node needs attention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from k3s_deploy import errors, metrics
from k3s_deploy.ports.ssh import SshRunner, SshTarget, guest_text
from k3s_deploy.services.k3scluster import guest_values, install

_TAIL = 600
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Probe:
    name: str
    host_key: str
    installed_version: str | None
    server_up: bool = False
    host_public_key: str = ""
    embedded_etcd: bool = False
    config_digest: str | None = None  # of the settings files applied (node_config.DIGEST_FILE)
    kube_vip_manifest: bool = False  # kubevip.MANIFEST_PATH exists


def with_node(name: str, exc: errors.K3sDeployError) -> errors.K3sDeployError:
    exc.message = f"node {name}: {exc.message}"
    exc.args = (exc.message,)
    return exc


async def probe(ssh: SshRunner, name: str, target: SshTarget, *, timeout_s: float) -> Probe:
    """Log in (verifying the host key) and read the installed K3s version."""
    with metrics.time_ssh("probe"):
        return await _probe(ssh, name, target, timeout_s=timeout_s)


async def _probe(ssh: SshRunner, name: str, target: SshTarget, *, timeout_s: float) -> Probe:
    try:
        result = await ssh.run(target, install.PROBE_COMMAND, timeout_s=timeout_s)
    except errors.K3sDeployError as exc:
        raise with_node(name, exc) from exc
    if not result.ok:
        raise errors.CommandFailed(
            f"node {name}: probing K3s failed (exit {result.exit_status}): {guest_text(result.stderr)}",
            exit_status=result.exit_status,
        )
    lines = result.stdout.splitlines()
    digest = next(
        (line.split()[-1] for line in lines if line.startswith(install.CONFIG_DIGEST_MARKER + " ")), ""
    )
    rest = "\n".join(line for line in lines if not line.startswith(install.CONFIG_DIGEST_MARKER))
    for marker in (install.SERVER_UP_MARKER, install.EMBEDDED_ETCD_MARKER, install.KUBE_VIP_MARKER):
        rest = rest.replace(marker, "")
    found = install.parse_version(rest)
    return Probe(
        name,
        guest_values.fingerprint(result.host_key, node=name),
        guest_values.version(found, node=name, source="`k3s --version`"),
        install.SERVER_UP_MARKER in result.stdout,
        result.host_public_key,
        install.EMBEDDED_ETCD_MARKER in result.stdout,
        digest if _DIGEST.fullmatch(digest) else None,  # the guest wrote it: only a hex digest counts
        install.KUBE_VIP_MARKER in result.stdout,
    )


async def run_install(
    ssh: SshRunner,
    name: str,
    target: SshTarget,
    script: str,
    *,
    timeout_s: float,
    operation: metrics.SshOperation = "install_k3s",
) -> None:
    """Run one install script (sent on stdin so the token stays off every command line); timed as
    ``operation`` (an upgrade re-runs the installer too)."""
    with metrics.time_ssh(operation):
        await _run_install(ssh, name, target, script, timeout_s=timeout_s)


async def _run_install(
    ssh: SshRunner, name: str, target: SshTarget, script: str, *, timeout_s: float
) -> None:
    try:
        result = await ssh.run(target, "sh -s", input=script, timeout_s=timeout_s)
    except errors.K3sDeployError as exc:
        raise with_node(name, exc) from exc
    if result.ok:
        return
    tail = _last_lines(result.stderr) or _last_lines(result.stdout)
    if result.exit_status == install.DOWNLOAD_FAILED:
        raise errors.TransientError(
            f"node {name}: could not download the K3s installer: {tail}", reason="InstallerDownloadFailed"
        )
    raise errors.K3sInstallFailed(
        f"node {name}: the K3s installer failed (exit {result.exit_status}): {tail}. Check spec.k3s "
        "(version, arguments, install source)."
    )


async def fetch_kubeconfig(ssh: SshRunner, name: str, target: SshTarget) -> str:
    with metrics.time_ssh("fetch_kubeconfig"):
        try:
            data = await ssh.fetch(target, "/etc/rancher/k3s/k3s.yaml")
        except errors.CommandFailed as exc:
            raise errors.GuestNotReady(f"node {name}: K3s has not written its kubeconfig yet") from exc
        except errors.K3sDeployError as exc:
            raise with_node(name, exc) from exc
    return data.decode(errors="replace")


def _last_lines(text: str, lines: int = 3) -> str:
    """The last few non-empty lines (whole lines: what the installer said last), bounded in size and
    free of control characters (the guest wrote them)."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return guest_text(" | ".join(kept), _TAIL)
