"""The lab as benchmarks and fault campaigns need it: every part a real process, every part in reach.

A :class:`Rig` runs, in a temporary directory, a management control plane (etcd + kube-apiserver on a
fixed loopback port, so it can be restarted), the Proxmox simulator with an inventory and timing of
the caller's choice, the guests process (real SSH, K3s stand-in) and the operator (`k3s-deploy run`)
watching one namespace. It exposes what a measurement needs: the simulator's admin endpoint (faults,
timing, counts), the guests' chaos knobs, kubectl, the operator's pid, and kill/restart of the
operator and of the apiserver. It is the e2e harness without pytest, so it can run at any size.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml
from proxmoxer import ProxmoxAPI

from k3s_deploy.api.crdgen import render_all
from k3s_deploy_lab import sample_cluster
from k3s_deploy_lab.controlplane import processes
from k3s_deploy_lab.controlplane.plane import ControlPlane
from k3s_deploy_lab.guests import component as guests_component
from k3s_deploy_lab.operator_component import kubectl_path
from k3s_deploy_lab.pvesim import component as pve_component
from k3s_deploy_lab.pvesim.inventory import SAMPLE

NAMESPACE = "bench"


def load_average() -> str:
    """The 1/5/15-minute load averages, printed beside every figure (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def sample_inventory(timing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The simulator's sample inventory with its own random DHCP /22 (no clash with other labs)."""
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    data["timing"] = {**data.get("timing", {}), **(timing or {})}
    data["dhcp"] = {"range": f"127.{random.randint(2, 250)}.{random.randrange(0, 256, 4)}.0/22"}
    return data


class Rig:
    """Control plane + simulator + guests + operator for one benchmark or campaign."""

    def __init__(
        self,
        *,
        inventory: dict[str, Any] | None = None,
        operator_env: dict[str, str] | None = None,
        namespace: str = NAMESPACE,
        keep: bool = False,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="k3sd-bench-"))
        self.inventory = inventory if inventory is not None else sample_inventory()
        self.operator_env = {"K3SD_RESYNC_SECONDS": "30", **(operator_env or {})}
        self.namespace = namespace
        self.keep = keep or bool(os.environ.get("K3SD_BENCH_KEEP"))  # keep logs for a post-mortem
        self.plane: ControlPlane | None = None
        self.kubeconfig = self.dir / "kubeconfig"
        self.pve_proc: subprocess.Popen[bytes] | None = None
        self.guests_proc: subprocess.Popen[bytes] | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_starts = 0
        self.pve: dict[str, Any] = {}
        self.private_key, self.public_key = sample_cluster.new_ssh_key()
        # Children die with the *thread* that spawned them (PR_SET_PDEATHSIG), so fault injectors
        # restart processes on this one long-lived thread, never on their own short-lived ones.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rig-spawner")

    # ----- lifecycle ------------------------------------------------------------------------------

    def start(self, *, operator: bool = True, guests: bool = True) -> Rig:
        if threading.current_thread() is threading.main_thread():  # SIGTERM (e.g. `timeout`) cleans up too
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            self.plane = ControlPlane(self.dir / "controlplane", port=processes.free_port())
            self.plane.start()
            shutil.copyfile(self.plane.admin_kubeconfig, self.kubeconfig)
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render_all())
            for plural in ("proxmoxvms", "k3sclusters"):
                self._established(f"crd/{plural}.k3sdeploy.io")
            pve_dir = self.dir / "pve"
            pve_dir.mkdir()
            (pve_dir / "inventory.yaml").write_text(yaml.safe_dump(self.inventory))
            self.pve_proc = pve_component.spawn(pve_dir, inventory=pve_dir / "inventory.yaml")
            self.pve = pve_component.wait_ready(self.pve_proc, pve_dir)
            shutil.copyfile(pve_dir / "pve.json", self.dir / "pve.json")
            if guests:
                self.guests_proc = guests_component.spawn(self.dir)
                ready = guests_component.wait_ready(self.guests_proc, self.dir)
                self.pve = guests_component.publish(self.dir, ready)
                self.pve["guestsHttpUrl"] = ready["httpUrl"]
            self.kubectl("create", "namespace", self.namespace)
            self.apply(*sample_cluster.lab_secrets(self.pve, self.namespace, self.private_key))
            if operator:
                self.start_operator()
        except BaseException:
            self.stop()
            raise
        return self

    def on_spawner(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` (which may start processes) on the rig's long-lived spawner thread."""
        return self._spawner.submit(action).result()

    def stop(self) -> None:
        self.kill_operator(signal.SIGTERM)
        for proc in (self.guests_proc, self.pve_proc):
            if proc is not None:
                processes.stop_group(proc)
        if self.plane is not None:
            self.plane.stop()
        self._spawner.shutdown(wait=True)
        if self.keep:
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- operator -------------------------------------------------------------------------------

    def start_operator(self, timeout: float = 90.0) -> int:
        port = processes.free_port()
        cmd = [sys.executable, "-m", "k3s_deploy", "run", "-n", self.namespace, "--standalone",
               "--liveness", f"http://127.0.0.1:{port}/healthz"]  # fmt: skip
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.operator_env}
        self.operator_starts += 1
        log = self.dir / "operator.log"
        with log.open("ab") as f:
            f.write(f"\n===== start #{self.operator_starts}\n".encode())
        self.operator = processes.spawn(cmd, log_path=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise RuntimeError(f"operator exited: {processes.tail(log)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self.operator.pid
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not live: {processes.tail(log)}")

    def kill_operator(self, sig: int = signal.SIGKILL) -> None:
        proc = self.operator
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart_apiserver(self) -> float:
        """Stop and start the management etcd + kube-apiserver on the same port; returns the downtime."""
        assert self.plane is not None
        started = time.monotonic()
        self.plane.stop()
        self.plane.start()
        return time.monotonic() - started

    # ----- kubernetes -----------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run([kubectl_path(), "--kubeconfig", str(self.kubeconfig), *args],
                              input=input, capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()[:500]}")
        return proc.stdout

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(list(objects)))

    def get(self, *args: str) -> Any:
        out = self.kubectl("get", *args, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(out) if out.strip() else None

    def items(self, kind: str) -> list[dict[str, Any]]:
        found = self.get(kind) or {}
        return list(found.get("items") or [])

    def _established(self, crd: str) -> None:
        """``kubectl wait`` for the CRD, again while the apiserver has not set any condition yet (kubectl
        refuses a nil ``status.conditions`` at once instead of waiting)."""
        for _ in range(40):
            try:
                self.kubectl("wait", "--for", "condition=Established", "--timeout=60s", crd)
                return
            except RuntimeError as exc:
                if "accessor error" not in str(exc):
                    raise
                time.sleep(0.25)
        self.kubectl("wait", "--for", "condition=Established", "--timeout=60s", crd)

    def cluster(self, name: str, servers: int, agents: int, **kwargs: Any) -> dict[str, Any]:
        return sample_cluster.cluster_manifest(
            self.pve,
            self.public_key,
            name=name,
            namespace=self.namespace,
            servers=servers,
            agents=agents,
            **kwargs,
        )

    def ready(self, kind: str, name: str) -> bool:
        obj = self.get(kind, name) or {}
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> float:
        """Poll until ``predicate()``; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if predicate():
                return time.monotonic() - started
            time.sleep(interval)
        raise TimeoutError(f"{what} not reached within {timeout:.0f}s")

    # ----- proxmox and guests ---------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = requests.request(method, f"{self.pve['adminUrl']}/{path}", json=body,
                                verify=self.pve["caCert"], timeout=60)  # fmt: skip
        resp.raise_for_status()
        return resp.json()

    def chaos(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The guests' lab chaos knobs (lab/guests/chaos.py)."""
        url = f"{self.pve['guestsHttpUrl']}/lab/v1/chaos"
        resp = requests.put(url, json=body, timeout=30) if body is not None else requests.get(url, timeout=30)
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def api(self) -> ProxmoxAPI:
        user, token = str(self.pve["tokenId"]).split("!", 1)
        host = str(self.pve["url"]).split("//", 1)[1]
        return ProxmoxAPI(host, user=user, token_name=token, token_value=self.pve["tokenSecret"],
                          verify_ssl=self.pve["caCert"], timeout=60)  # fmt: skip

    def vms(self) -> list[dict[str, Any]]:
        """Every VM (templates included) as /cluster/resources lists it, with its tags."""
        for attempt in range(30):  # the caller may be injecting Proxmox faults right now
            try:
                return list(self.api().cluster.resources.get(type="vm"))
            except Exception:
                if attempt == 29:
                    raise
                time.sleep(0.2)
        return []


def rss_and_cpu(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds user+system) of a process from /proc."""
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kib / 1024, (int(fields[11]) + int(fields[12])) / ticks


def parse_sizes(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def table(rows: Iterable[Iterable[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
