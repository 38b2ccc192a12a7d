"""What an operator that handles only ProxmoxVMs never loads: asyncssh and cryptography (about 10 MiB
of its memory together) come in with the first SSH session or kubeconfig read, not at start-up."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import k3s_deploy.runner, k3s_deploy.handlers.proxmoxvm, k3s_deploy.handlers.k3scluster
import k3s_deploy.adapters.kube, k3s_deploy.adapters.proxmox, k3s_deploy.adapters.kube_children
import k3s_deploy.adapters.target_cluster, k3s_deploy.adapters.artefacts, k3s_deploy.adapters.channels
from k3s_deploy.adapters.ssh_lazy import LazySshRunner
runner = LazySshRunner(max_output_bytes=1024)
print(sorted(m for m in ("asyncssh", "cryptography") if m in sys.modules))
runner._load()
print(sorted(m for m in ("asyncssh", "cryptography") if m in sys.modules))
from k3s_deploy.services.k3scluster import kubeconfig
try:
    kubeconfig.sanitise("clusters: []")
except Exception as exc:
    print(type(exc).__name__)
"""


def test_ssh_and_certificates_are_loaded_at_first_use_not_at_start() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    at_start, after_first_use, rejected = proc.stdout.split("\n")[:3]
    assert at_start == "[]"
    assert after_first_use == "['asyncssh', 'cryptography']"
    assert rejected == "GuestInputRejected"  # the kubeconfig check still works with its lazy imports
