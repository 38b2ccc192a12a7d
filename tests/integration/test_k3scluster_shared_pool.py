"""Two K3sClusters drawing from one IP pool on one credentials Secret, applied together: the operator
process (real apiserver, Proxmox VE simulator) never writes one address into two children's specs, and
wiping both statuses moves no address.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from integration.test_proxmoxvm_sim import Env, env  # noqa: F401  # env is a fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _cluster(env: Env, name: str) -> dict[str, Any]:  # noqa: F811
    template = {"clone": {"template": {"name": "ubuntu-2404-cloud"}}, "cloudInit": {"user": "k3s"}}
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "K3sCluster",
        "metadata": {"name": name, "namespace": env.ns},
        "spec": {
            "credentialsRef": {"name": "pve"},
            "k3s": {"version": "v1.31.4+k3s1"},
            "ssh": {"privateKeySecretRef": {"name": "ssh", "key": "ssh-privatekey"}},
            "servers": {"replicas": 1, "template": template},
            "agents": {"replicas": 2, "template": template},
            "network": {
                "ipPool": {"start": "127.6.0.40", "end": "127.6.0.49", "prefixLength": 24},
                "gateway": "127.6.0.1",
            },
        },
    }


def _addresses(env: Env) -> dict[str, str]:  # noqa: F811
    items = (env._json("pvm", "-n", env.ns) or {}).get("items", [])
    out = {}
    for item in items:
        ip_config = ((item.get("spec") or {}).get("cloudInit") or {}).get("ipConfig") or {}
        if ip_config.get("address"):
            out[item["metadata"]["name"]] = ip_config["address"]
    return out


def _allocations(env: Env, name: str) -> dict[str, str]:  # noqa: F811
    obj = env._json("k3sc", name, "-n", env.ns) or {}
    return dict((obj.get("status") or {}).get("ipAllocations") or {})


def test_two_clusters_on_one_pool_get_distinct_addresses(env: Env) -> None:  # noqa: F811
    ssh_key = {
        "ssh-privatekey": "-----BEGIN OPENSSH PRIVATE KEY-----\nunused\n-----END OPENSSH PRIVATE KEY-----\n"
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ssh", "namespace": env.ns}}
    docs = [{**secret, "stringData": ssh_key}, _cluster(env, "alpha"), _cluster(env, "beta")]
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))  # both first passes start together

    children = env.wait_for(
        lambda: a if len(a := _addresses(env)) == 6 else None, timeout=60, what="6 children"
    )
    assert len(set(children.values())) == 6, children
    assert set(children.values()) == {f"127.6.0.{i}/24" for i in range(40, 46)}

    for name in ("alpha", "beta"):
        env.wait_for(lambda n=name: _allocations(env, n), timeout=60, what=f"{name} status.ipAllocations")
    # status lost while no operator runs (a restore, a move): the new process reads the children
    env.operator.kill()  # type: ignore[attr-defined]
    for name in ("alpha", "beta"):
        patch = json.dumps({"status": {"ipAllocations": None, "nodes": None}})
        env.kubectl("patch", "k3sc", name, "-n", env.ns, "--subresource=status", "--type=merge", "-p", patch)
        assert not _allocations(env, name)
    env.operator.start()  # type: ignore[attr-defined]
    env.wait_for(
        lambda: all(len(_allocations(env, n)) == 3 for n in ("alpha", "beta")),
        timeout=90,
        what="status.ipAllocations written again",
    )
    assert _addresses(env) == children
    allocations = {**_allocations(env, "alpha"), **_allocations(env, "beta")}
    assert {k: f"{v}/24" for k, v in allocations.items()} == children
