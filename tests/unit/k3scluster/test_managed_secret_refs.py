"""T2 (tenant): a Secret reference in the spec cannot carry an operator-written Secret onto the nodes.

The K3sCluster's own ``<cluster>-token`` holds the server join token under the key ``token``, the very
key registry auth takes. Named as ``registries.configs[].authSecretRef``, the server token would be
written into ``registries.yaml`` on every node, agents included, which must never hold it
(docs/security.md, items 10 and 18). Before the fix it reached both nodes' registries.yaml.
"""

from __future__ import annotations

import json

import pytest

from k3s_deploy.services.k3scluster import node_config

from .test_reconcile import NS, World, cluster_body, cond


async def _ready_cluster() -> tuple[World, dict]:  # type: ignore[type-arg]
    w, body = World(), cluster_body(1, 1)
    await w.pass_(body)
    w.boot()
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    return w, body


@pytest.mark.parametrize(
    "spec_change",
    [
        {"k3s": {"registries": {"configs": [{"host": "ghcr.io", "authSecretRef": {"name": "demo-token"}}]}}},
        {"k3s": {"registries": {"configs": [{"host": "ghcr.io", "tlsSecretRef": {"name": "demo-token"}}]}}},
    ],
    ids=["registry-auth", "registry-tls"],
)
async def test_an_operator_written_secret_never_reaches_the_nodes(spec_change: dict) -> None:  # type: ignore[type-arg]
    w, body = await _ready_cluster()
    own = w.objects.secrets[(NS, "demo-token")]
    server_token = own["data"]["token"].decode()
    assert own["labels"].get("app.kubernetes.io/managed-by") == "k3s-deploy"

    body["spec"]["k3s"].update(spec_change["k3s"])
    body["metadata"]["generation"] += 1
    outs = [await w.pass_(body) for _ in range(3)]

    for ip, host in w.ssh.hosts.items():
        for path, text in host.files.items():
            if path != "/var/lib/rancher/k3s/server/token":
                assert server_token not in str(text), f"the server token reached {path} on {ip}"
        assert node_config.REGISTRIES_FILE not in host.files
    stalled = cond(outs[-1], "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SecretRefForbidden", stalled
    assert "'demo-token'" in stalled["message"] and "create a Secret of your own" in stalled["message"]
    warnings = [e for out in outs for e in out.events if e.reason == "SecretRefForbidden"]
    assert warnings and warnings[0].type == "Warning"
    for out in outs:
        assert server_token not in json.dumps(out.status) + json.dumps([e.message for e in out.events])


async def test_a_secret_of_the_tenants_own_is_still_used() -> None:
    w, body = await _ready_cluster()
    w.objects.secrets[(NS, "pull")] = {"data": {"token": b"pull-token-1"}, "labels": {}, "owner": None}
    body["spec"]["k3s"]["registries"] = {"configs": [{"host": "ghcr.io", "authSecretRef": {"name": "pull"}}]}
    body["metadata"]["generation"] += 1
    for _ in range(3):
        await w.pass_(body)
    assert all("pull-token-1" in h.files[node_config.REGISTRIES_FILE] for h in w.ssh.hosts.values())
