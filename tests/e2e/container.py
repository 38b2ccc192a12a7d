"""Run the operator image the way the Deployment's pod runs it, with podman (or Docker).

``build_image`` runs `./dev image` (what users and CI run) and returns its image.json.
``PodSpec.from_deployment`` reads what the manifests say about the pod (image, args, env, user,
read-only root, capabilities, the emptyDir volumes and their sizes, resource limits, ports, probes);
``run_args`` turns that into one `podman run`. The only departure from a pod: the container shares the
host's network (it must reach the loopback lab), so each declared containerPort moves to a free
loopback port and 0.0.0.0 binds become 127.0.0.1; nothing else is rewritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Errors that mean the container runtime cannot run containers on this host at all (not a bad image).
RUNTIME_BROKEN = re.compile(
    r"OCI runtime|runc create failed|cannot set up namespace|newuidmap|cgroup.*(permission|not supported)"
    r"|Cannot connect to the Docker daemon|unshare|operation not permitted",
    re.IGNORECASE,
)


def loud_skip(reason: str) -> None:
    """Skip, and make sure nobody misses it: a warning in the summary and a line on stderr."""
    message = f"THE IMAGE IS NOT TESTED HERE: {reason}"
    print(f"\n*** {message}\n", file=sys.stderr, flush=True)
    warnings.warn(pytest.PytestWarning(message), stacklevel=2)
    pytest.skip(message)


def engine() -> str | None:
    """`docker` when a Docker engine answers, else `podman` if present or installable (root)."""
    forced = os.environ.get("K3SD_IMAGE_ENGINE")
    if forced:
        return forced
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("podman") or os.geteuid() == 0:
        return "podman"
    return None


def engine_env() -> dict[str, str]:
    """The project's containers.conf (runc, no default ulimits), as `./dev image` uses it."""
    return {**os.environ, "CONTAINERS_CONF": str(ROOT / ".ci" / "containers.conf")}


def build_image(out: Path) -> dict[str, Any]:
    """`./dev image` into ``out``; skip loudly only when the host cannot run containers at all."""
    eng = engine()
    if eng is None:
        loud_skip("no Docker engine answers, podman is missing, and only root may install it (./dev image)")
    env = {**engine_env(), "K3SD_IMAGE_OUT": str(out), "K3SD_IMAGE_ENGINE": str(eng)}
    proc = subprocess.run(
        [str(ROOT / "dev"), "image"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        if RUNTIME_BROKEN.search(proc.stderr):
            loud_skip(f"{eng} cannot run containers on this host:\n{proc.stderr[-1500:]}")
        raise AssertionError(f"./dev image failed:\n{proc.stderr[-6000:]}")
    info: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    probe = subprocess.run(
        [eng, "run", "--rm", "--pull=never", "--entrypoint", "/bin/true", info["image"]],
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        loud_skip(f"{eng} built the image but cannot run a container here:\n{probe.stderr[-1500:]}")
    return info


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values ($$ escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]) if m[1] else "$", value
    )


def k8s_size(quantity: str) -> str:
    """A Kubernetes quantity (64Mi, 1Gi, 512M, bytes) as podman's size (64m, 1g, bytes)."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]i?)?", quantity).groups()  # type: ignore[union-attr]
    factor = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "K": 1000, "M": 1000**2,
              "G": 1000**3, "T": 1000**4}.get(unit or "", 1)  # fmt: skip
    return str(int(number) * factor)


def k8s_cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


@dataclass
class PodSpec:
    """The operator container of the Deployment, as the manifests state it."""

    image: str
    args: list[str]
    env: dict[str, str]
    user: str
    read_only: bool
    no_new_privileges: bool
    cap_drop: list[str]
    tmpfs: dict[str, str]  # mountPath -> size in bytes (emptyDir volumes, sizeLimit)
    limits: dict[str, str]
    ports: dict[str, int]  # name -> containerPort
    liveness_path: str
    liveness_port: str
    remapped: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any], field_values: dict[str, str]) -> PodSpec:
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert "command" not in container, "the Deployment must use the image's entrypoint"
        env: dict[str, str] = {}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
            else:
                path = var["valueFrom"]["fieldRef"]["fieldPath"]  # other sources: extend this test
                env[var["name"]] = field_values[path]
        sec = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        tmpfs = {}
        for mount in container.get("volumeMounts", []):
            empty_dir = volumes[mount["name"]].get("emptyDir")
            assert empty_dir is not None, f"volume {mount['name']}: only emptyDir is translated"
            assert empty_dir.get("sizeLimit"), f"emptyDir {mount['name']} has no sizeLimit"
            tmpfs[mount["mountPath"]] = k8s_size(empty_dir["sizeLimit"])
        probe = container["livenessProbe"]["httpGet"]
        return cls(
            image=container["image"],
            args=[expand(a, env) for a in container.get("args", [])],
            env=env,
            user=f"{sec['runAsUser']}:{sec['runAsGroup']}",
            read_only=bool(sec.get("readOnlyRootFilesystem")),
            no_new_privileges=sec.get("allowPrivilegeEscalation") is False,
            cap_drop=list(sec.get("capabilities", {}).get("drop", [])),
            tmpfs=tmpfs,
            limits=dict(container.get("resources", {}).get("limits", {})),
            ports={p["name"]: int(p["containerPort"]) for p in container.get("ports", [])},
            liveness_path=probe["path"],
            liveness_port=str(probe["port"]),
        )

    def onto_host_network(self, free_port: Any) -> None:
        """Move every declared port to a free loopback one, and 0.0.0.0 binds to 127.0.0.1."""
        self.remapped = {port: free_port() for port in self.ports.values()}
        for name, value in self.env.items():
            for old, new in self.remapped.items():
                value = str(new) if value == str(old) else re.sub(rf":{old}\b", f":{new}", value)
            self.env[name] = value.replace("0.0.0.0", "127.0.0.1")

    def host_port(self, name_or_number: str) -> int:
        port = self.ports.get(name_or_number) or int(name_or_number)
        return self.remapped.get(port, port)


def run_args(eng: str, pod: PodSpec, name: str, sa_dir: Path, extra_env: dict[str, str]) -> list[str]:
    args = [eng, "run", "--detach", "--name", name, "--pull=never", "--network", "host", "--user", pod.user]
    if pod.read_only:
        args += ["--read-only"] + (["--read-only-tmpfs=false"] if eng == "podman" else [])
    if pod.no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    args += [f"--cap-drop={cap}" for cap in pod.cap_drop]
    for path, size in pod.tmpfs.items():
        args += ["--tmpfs", f"{path}:rw,size={size},mode=1777"]
    if "memory" in pod.limits:
        args += ["--memory", k8s_size(pod.limits["memory"])]
    if "cpu" in pod.limits:
        args += ["--cpus", k8s_cpus(pod.limits["cpu"])]
    args += ["-v", f"{sa_dir}:{SA_DIR}:ro"]
    for key, value in {**pod.env, **extra_env}.items():
        args += ["-e", f"{key}={value}"]
    return [*args, pod.image, *pod.args]
