"""The lab's `controlplane` component: a local control plane, or the user's own cluster.

With ``--kubeconfig`` (kind, k3d, a real cluster) nothing is built or started: the cluster must
answer, and everything after it uses that kubeconfig. Otherwise a :class:`ControlPlane` runs in
``DIR/controlplane`` and its admin kubeconfig is copied to ``DIR/kubeconfig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from k3s_deploy_lab.controlplane.plane import ControlPlane
from k3s_deploy_lab.stack import LabContext


def check_cluster(kubeconfig: Path) -> dict[str, Any]:
    """GET /version through ``kubeconfig`` (any auth the kubernetes client supports); raise if silent."""
    from kubernetes import client, config

    # The kubernetes client ships no type hints.
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        info = client.VersionApi(api).get_code(_request_timeout=15)
    except Exception as exc:
        raise RuntimeError(f"the cluster in {kubeconfig} does not answer: {exc}") from exc
    finally:
        api.close()
    return {"gitVersion": info.git_version, "platform": info.platform}


@contextlib.asynccontextmanager
async def lab_component(ctx: LabContext) -> AsyncIterator[None]:
    if ctx.kubeconfig is not None:
        version = await asyncio.to_thread(check_cluster, ctx.kubeconfig)
        ctx.log(f"using the existing cluster in {ctx.kubeconfig} ({version['gitVersion']})")
        ctx.facts["kubeconfig"] = str(ctx.kubeconfig)
        ctx.facts["controlplane"] = {"external": True, "version": version["gitVersion"]}
        yield
        return
    plane = ControlPlane(ctx.dir / "controlplane", record_pid=ctx.record_pid, log=ctx.log)
    async with plane:
        kubeconfig = ctx.dir / "kubeconfig"
        shutil.copyfile(plane.admin_kubeconfig, kubeconfig)
        os.chmod(kubeconfig, 0o600)
        ctx.kubeconfig = kubeconfig
        version = await asyncio.to_thread(plane.version)
        ctx.facts["kubeconfig"] = str(kubeconfig)
        ctx.facts["controlplane"] = {
            "external": False,
            "url": plane.url,
            "version": version.get("gitVersion"),
            "pids": plane.pids,
            "start_seconds": round(plane.start_seconds or 0.0, 2),
            "logs": str(plane.logs_dir),
        }
        try:
            yield
        finally:
            kubeconfig.unlink(missing_ok=True)
