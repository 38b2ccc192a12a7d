"""The operator IMAGE, run as the Deployment runs it, takes a K3sCluster to Ready and through deletion.

`./dev image` builds it (as CI and users do). Per overlay in manifests/overlays, a fresh control plane
gets the overlay in one `kubectl apply -k` (with `images:` pointing at the built image); the
container then runs with what the rendered Deployment says: its args and env (read from the
kustomize output, so drift fails here), uid/gid, a read-only root, dropped capabilities, no privilege
escalation, the emptyDir volumes as tmpfs of their sizeLimit, the resource limits, and a
ServiceAccount token from the TokenRequest API (`kubectl create token`) mounted where a pod has it,
so it holds exactly the RBAC that overlay grants. The lab (Proxmox simulator, SSH guests) is the
e2e one. Skips only when the host cannot run containers at all, and then says so loudly.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.test_install_fresh import create_foreign_namespaces, fresh_plane, kubectl
from k3s_deploy_lab import sample_cluster
from k3s_deploy_lab.controlplane import ControlPlane
from k3s_deploy_lab.controlplane.processes import free_port
from unit.shipping.kustomize import MANIFESTS, SERVICE_ACCOUNT, overlays_present
from unit.shipping.test_lock import LOCKS, normal, pins

from .container import ROOT, PodSpec, build_image, engine, engine_env, run_args

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
__all__ = ["fresh_plane"]
BASE_IMAGE = "ghcr.io/k3s-deploy/k3s-deploy"  # what manifests/base sets; users override it with images:


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("image")
    info = build_image(out)
    info["out"] = out
    print(f"image {info['image']}: {info['sizeBytes'] / 1e6:.0f} MB, built in {info['buildSeconds']} s")
    return info


def in_image(info: dict[str, Any], *args: str) -> str:
    cmd = [str(engine()), "run", "--rm", "--pull=never", "--network", "none", "--entrypoint", args[0]]
    proc = subprocess.run(
        [*cmd, info["image"], *args[1:]], env=engine_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_image_holds_exactly_the_lock_and_its_sbom_says_so(image: dict[str, Any]) -> None:
    listing = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    installed = {normal(k): v for k, v in json.loads(in_image(image, "python", "-c", listing)).items()}
    locked = {name: version for name, (version, _) in pins(LOCKS / "operator.lock").items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert installed.pop("k3s-deploy") == project["version"]
    assert installed == locked, {
        k: (installed.get(k), locked.get(k)) for k in installed.keys() ^ locked.keys()
    }
    sbom = json.loads((image["out"] / "sbom.cdx.json").read_text())
    assert sbom["metadata"]["component"]["name"] == "k3s-deploy"
    assert {normal(c["name"]): c["version"] for c in sbom["components"]} == locked
    assert (
        in_image(image, "python", "-c", "import os; print(os.getuid(), os.getgid())").split() == ["65532"] * 2
    )
    no_lab = "import importlib.util as u; print(u.find_spec('k3s_deploy_lab'), u.find_spec('k3s_deploy.lab'))"
    assert in_image(image, "python", "-c", no_lab).split() == ["None", "None"], "lab code in the image"


def install(plane: ControlPlane, overlay: str, image_ref: str, workdir: Path) -> list[dict[str, Any]]:
    """A user's kustomization: the overlay as shipped, the image overridden; applied once."""
    workdir.mkdir()
    name, _, tag = image_ref.rpartition(":")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "overlays" / overlay, workdir)],
        "images": [{"name": BASE_IMAGE, "newName": name, "newTag": tag}],
    }
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    create_foreign_namespaces(plane, workdir)
    applied = kubectl(plane, "apply", "-k", str(workdir))
    assert applied.returncode == 0, applied.stderr
    waited = kubectl(plane, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    return [d for d in yaml.safe_load_all(kubectl(plane, "kustomize", str(workdir)).stdout) if d]


def service_account_dir(plane: ControlPlane, namespace: str, dest: Path) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount, token from TokenRequest."""
    token = kubectl(plane, "create", "token", SERVICE_ACCOUNT, "-n", namespace, "--duration=2h")
    assert token.returncode == 0, token.stderr
    dest.mkdir(mode=0o755)
    (dest / "token").write_text(token.stdout.strip())
    (dest / "ca.crt").write_bytes(plane.ca.cert_pem)
    (dest / "namespace").write_text(namespace)
    for path in dest.iterdir():
        path.chmod(0o644)  # the container runs as 65532
    return dest


class Container:
    def __init__(self, eng: str, name: str) -> None:
        self.eng, self.name = eng, name

    def logs(self) -> str:
        proc = subprocess.run([self.eng, "logs", self.name], env=engine_env(), capture_output=True, text=True)
        return proc.stdout + proc.stderr

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self.eng, "exec", self.name, *args]
        return subprocess.run(cmd, env=engine_env(), capture_output=True, text=True, timeout=60)

    def running(self) -> bool:
        proc = subprocess.run(
            [self.eng, "inspect", "--format", "{{.State.Running}}", self.name],
            env=engine_env(), capture_output=True, text=True,
        )  # fmt: skip
        return proc.stdout.strip() == "true"


@pytest.fixture
def operator_container() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        subprocess.run([container.eng, "rm", "-f", container.name], env=engine_env(), capture_output=True)


def wait_http(url: str, container: Container, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert container.running(), f"the operator container exited:\n{container.logs()[-6000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as rsp:  # noqa: S310 - http to loopback
                if rsp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered:\n{container.logs()[-6000:]}")


@pytest.mark.parametrize("overlay", overlays_present())
def test_the_image_as_deployed_takes_a_cluster_to_ready_and_deletes_it(
    overlay: str,
    image: dict[str, Any],
    fresh_plane: ControlPlane,
    pve_sim: Any,
    lab_guests: dict[str, Any],
    operator_container: list[Container],
    tmp_path: Path,
) -> None:
    plane = fresh_plane
    docs = install(plane, overlay, image["image"], tmp_path / "install")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    ns = deployment["metadata"]["namespace"]
    fields = {"metadata.namespace": ns, "metadata.name": f"{deployment['metadata']['name']}-0"}
    pod = PodSpec.from_deployment(deployment, fields)
    assert pod.image == image["image"], "the images: override did not reach the Deployment"
    assert pod.user == "65532:65532" and pod.read_only and pod.cap_drop == ["ALL"]
    assert pod.env["K3SD_STANDALONE"] == "false", "the Deployment runs with kopf peering"
    pod.onto_host_network(free_port)

    sa_dir = service_account_dir(plane, ns, tmp_path / "serviceaccount")
    host, port = plane.url.removeprefix("https://").rsplit(":", 1)
    container = Container(str(engine()), f"k3sd-e2e-{secrets.token_hex(4)}")
    operator_container.append(container)
    cmd = run_args(container.eng, pod, container.name, sa_dir,
                   {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})  # fmt: skip
    started = subprocess.run(cmd, env=engine_env(), capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    live = f"http://127.0.0.1:{pod.host_port(pod.liveness_port)}{pod.liveness_path}"
    wait_http(live, container)

    # The container is what the pod promises: uid, read-only root, /tmp the only (sized) writable place.
    assert container.exec("id", "-u").stdout.strip() == "65532"
    refused = container.exec("python", "-c", "open('/opt/k3s-deploy/x', 'w')")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    for path, size in pod.tmpfs.items():
        statvfs = (
            f"import os; s = os.statvfs({path!r}); open({path!r} + '/w', 'w'); print(s.f_blocks * s.f_frsize)"
        )
        assert container.exec("python", "-c", statvfs).stdout.strip() == size, path

    # Where its K3sClusters live: the namespace(s) its args name, or any (cluster-wide).
    scope = [a.split("=", 1)[1] for a in pod.args if a.startswith("--namespace=")]
    target = scope[0] if scope else "tenant-a"
    kubectl(plane, "create", "namespace", target)  # exists already unless cluster-wide
    admin = plane.admin_kubeconfig
    private, public = sample_cluster.new_ssh_key()
    sample_cluster.apply(admin, *sample_cluster.lab_secrets(lab_guests, target, private))
    sample_cluster.apply(admin, sample_cluster.cluster_manifest(lab_guests, public, name="img", namespace=target,
                                                                servers=1, agents=1))  # fmt: skip
    started_at = time.monotonic()
    try:
        ready = sample_cluster.wait_ready(
            admin, "img", target, timeout=420, log=lambda line: print(line, flush=True)
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{container.logs()[-8000:]}") from exc
    print(f"{overlay}: 1 server + 1 agent Ready after {time.monotonic() - started_at:.1f}s through the image")
    status = ready["status"]
    assert (status["readyServers"], status["readyAgents"]) == (1, 1)
    vmids = {node["vmid"] for node in status["nodes"]}
    assert vmids <= set(vm["vmid"] for vm in pve_sim.api().cluster.resources.get(type="vm"))
    secret = json.loads(kubectl(plane, "get", "secret", "img-kubeconfig", "-n", target, "-o", "json").stdout)
    assert b"server: https://" in base64.b64decode(secret["data"]["value"])

    # HA as deployed: the operator made its peering object(s) and keeps its entry alive there.
    for where in [["-n", ns] for ns in scope] or [[]]:
        kind = "kopfpeering" if where else "clusterkopfpeering"
        peering = kubectl(plane, "get", kind, *where, pod.env["K3SD_PEERING_NAME"], "-o", "json")
        assert peering.returncode == 0, f"no peering object {where}: {peering.stderr}"
        assert json.loads(peering.stdout).get("status"), f"no replica announced itself in {kind} {where}"
    metrics_port = pod.host_port("metrics")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as rsp:
        assert b"k3sdeploy_" in rsp.read()

    deleted = kubectl(plane, "delete", "k3sc", "img", "-n", target, "--timeout=240s")
    assert deleted.returncode == 0, f"{deleted.stderr}\n{container.logs()[-6000:]}"
    left = json.loads(kubectl(plane, "get", "pvm", "-n", target, "-o", "json").stdout)["items"]
    assert not left, [p["metadata"]["name"] for p in left]
    assert not vmids & {vm["vmid"] for vm in pve_sim.api().cluster.resources.get(type="vm")}
    assert kubectl(plane, "get", "secret", "img-kubeconfig", "-n", target).returncode != 0

    # The kubelet stops a pod with SIGTERM and kills it after the grace period (30 s unless set).
    grace = int(deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))
    stop_started = time.monotonic()
    stopped = subprocess.run([container.eng, "stop", "-t", str(grace), container.name], env=engine_env(),
                             capture_output=True, text=True, timeout=grace + 30)  # fmt: skip
    stop_seconds = time.monotonic() - stop_started
    code = subprocess.run([container.eng, "inspect", "--format", "{{.State.ExitCode}}", container.name],
                          env=engine_env(), capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"{overlay}: stopped in {stop_seconds:.1f}s with exit code {code}")
    assert stopped.returncode == 0 and stop_seconds < grace and code == "0", (stop_seconds, code)
    logs = container.logs()
    assert "forbidden" not in logs.lower(), "the overlay's RBAC is missing a permission the operator used"
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert records and all("message" in r for r in records), "K3SD_LOG_FORMAT=json gives JSON lines"
    assert pve_sim.token_secret not in logs and private.split("\n")[1] not in logs
