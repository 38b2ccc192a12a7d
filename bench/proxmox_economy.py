"""Proxmox calls per VM per steady-state resync, for N = 1, 10, 100 ProxmoxVMs of one credential.

Runs the operator's real reconcile code and proxmoxer adapter against the Proxmox VE simulator (real
HTTPS, real API, request counting); only the Kubernetes side is kept in memory, because the question
is what the Proxmox API pays. For each N it clones and starts N VMs, lets N ProxmoxVM objects adopt
and converge, then runs a few resync rounds one interval apart and reads the simulator's call counts.

    python bench/proxmox_economy.py [--sizes 1,10,100] [--rounds 3] [--resync 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml
from proxmoxer import ProxmoxAPI

from k3s_deploy.adapters.proxmox import ProxmoxerConnector
from k3s_deploy.api.proxmoxvm import ProxmoxVM
from k3s_deploy.services.proxmoxvm.inventory import Sessions
from k3s_deploy.services.proxmoxvm.reconcile import reconcile
from k3s_deploy.services.proxmoxvm.work import Memory
from k3s_deploy_lab.pvesim.component import spawn, terminate, wait_ready
from k3s_deploy_lab.pvesim.inventory import SAMPLE


class MemoryKube:
    """The Kubernetes side in memory: one Secret, status writes dropped (not what is measured)."""

    def __init__(self, secret: dict[str, bytes]) -> None:
        self.secret = secret

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secret

    async def read_object(self, *args: Any) -> dict[str, Any] | None:
        return None  # the bench objects are standalone: no owner to verify

    async def patch_status(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def patch_annotations(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def post_event(self, involved: Mapping[str, Any], **kwargs: Any) -> None:
        return None


class Sim:
    def __init__(self, directory: Path) -> None:
        inventory = yaml.safe_load(SAMPLE.read_text())
        inventory["timing"] = {"scale": 0.01, "authFailureDelay": 0.05, "resourcesStatusLag": 10.0}
        (directory / "inventory.yaml").write_text(yaml.safe_dump(inventory))
        self.proc = spawn(directory, inventory=directory / "inventory.yaml")
        self.info = wait_ready(self.proc, directory)
        self.ca = str(self.info["caCert"])
        self.ca_pem = Path(self.ca).read_bytes()
        user, token = str(self.info["tokenId"]).split("!", 1)
        host = str(self.info["url"]).split("//", 1)[1]
        self.api = ProxmoxAPI(host, user=user, token_name=token, token_value=self.info["tokenSecret"],
                              verify_ssl=self.ca, timeout=60)  # fmt: skip

    def admin(self, method: str, path: str) -> Any:
        resp = requests.request(method, f"{self.info['adminUrl']}/{path}", verify=self.ca, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def wait(self, upid: str) -> None:
        node = upid.split(":")[1]
        while self.api.nodes(node).tasks(upid).status.get()["status"] != "stopped":
            time.sleep(0.02)

    def make_vms(self, n: int, first: int) -> list[int]:
        vmids = list(range(first, first + n))
        for vmid in vmids:
            self.wait(self.api.nodes("pve1").qemu(9000).clone.post(newid=vmid, name=f"bench-{vmid}", full=1))
            self.api.nodes("pve1").qemu(vmid).config.put(tags="bench;k3sdeploy-adoptable")  # adoption consent
        for vmid in vmids:
            self.wait(self.api.nodes("pve1").qemu(vmid).status.start.post())
        return vmids

    def stop(self) -> None:
        terminate(self.proc)


def body(vmid: int) -> dict[str, Any]:
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {
            "name": f"bench-{vmid}",
            "namespace": "bench",
            "uid": f"bench-{vmid:08d}",
            "generation": 1,
        },
        "spec": {
            "credentialsRef": {"name": "pve"},
            "source": {"existing": {"vmid": vmid}},
            "tags": ["bench"],
            "powerState": "Running",
        },
        "status": {},
    }


async def measure(sim: Sim, n: int, first: int, rounds: int, resync: float) -> tuple[Counter[str], int]:
    vmids = await asyncio.to_thread(sim.make_vms, n, first)
    secret = {
        "url": str(sim.info["url"]).encode(),
        "tokenId": str(sim.info["tokenId"]).encode(),
        "tokenSecret": str(sim.info["tokenSecret"]).encode(),
        "caCert": sim.ca_pem,
    }
    kube = MemoryKube(secret)
    sessions = Sessions(ProxmoxerConnector(timeout=60, concurrency=8), max_age=0.9 * resync)
    objects = {vmid: body(vmid) for vmid in vmids}
    memories = {vmid: Memory() for vmid in vmids}

    async def one(vmid: int) -> float | None:
        obj = objects[vmid]

        async def checkpoint(status: dict[str, Any]) -> None:
            obj["status"] = status

        out = await reconcile(
            ProxmoxVM.model_validate(obj),
            kube=kube,
            sessions=sessions,
            memory=memories[vmid],
            checkpoint=checkpoint,
        )
        obj["status"] = out.status
        if out.error is not None:
            raise RuntimeError(f"VM {vmid}: {out.error}")
        return out.requeue_after

    pending = set(vmids)
    for _ in range(60):  # converge: adopt, tag, read addresses
        delays = await asyncio.gather(*(one(v) for v in sorted(pending)))
        pending = {v for v, d in zip(sorted(pending), delays, strict=True) if d is not None}
        if not pending:
            break
        await asyncio.sleep(0.2)
    if pending:
        raise RuntimeError(f"{len(pending)} VMs did not converge")
    await asyncio.sleep(resync)
    sim.admin("POST", "counts/reset")
    for _ in range(rounds):
        await asyncio.gather(*(one(v) for v in vmids))
        await asyncio.sleep(resync)
    calls: Counter[str] = Counter(sim.admin("GET", "counts")["calls"])
    return calls, len(vmids)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resync", type=float, default=1.0, help="resync interval in seconds")
    args = parser.parse_args()
    print(f"{'N':>5} {'rounds':>6} {'calls':>6} {'calls/VM/resync':>16}  by endpoint")
    with tempfile.TemporaryDirectory(prefix="k3sd-bench-") as tmp:
        sim = Sim(Path(tmp))
        try:
            first = 200
            for n in (int(s) for s in args.sizes.split(",")):
                calls, count = await measure(sim, n, first, args.rounds, args.resync)
                first += n
                total = sum(calls.values())
                detail = ", ".join(f"{k} x{v}" for k, v in sorted(calls.items()))
                print(
                    f"{count:>5} {args.rounds:>6} {total:>6} {total / (count * args.rounds):>16.3f}  {detail}"
                )
        finally:
            sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
