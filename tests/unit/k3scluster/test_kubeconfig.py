from __future__ import annotations

import pytest
import yaml

from k3s_deploy import errors
from k3s_deploy.services.k3scluster.kubeconfig import rewrite, server_of, server_url

K3S_YAML = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
"""


def test_rewrite_points_at_server_and_renames() -> None:
    out = rewrite(K3S_YAML, server="https://10.0.0.10:6443", name="demo")
    doc = yaml.safe_load(out)
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.0.10:6443"
    assert doc["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="
    assert doc["current-context"] == "demo"
    assert doc["contexts"] == [{"name": "demo", "context": {"cluster": "demo", "user": "demo"}}]
    assert doc["users"][0]["user"]["client-key-data"] == "S0VZ"
    assert server_of(out) == "https://10.0.0.10:6443"


def test_rewrite_rejects_garbage() -> None:
    with pytest.raises(errors.K3sInstallFailed):
        rewrite("just: text", server="https://x:6443", name="demo")


def test_server_url_forms() -> None:
    assert server_url("10.0.0.1") == "https://10.0.0.1:6443"
    assert server_url("fd00::1") == "https://[fd00::1]:6443"
    assert server_url("k3s.example.com") == "https://k3s.example.com:6443"
    assert server_url("https://lb.example.com:443") == "https://lb.example.com:443"
