"""The operator process against the real apiserver: both kinds handled, status conventions, RBAC-free bits.

These need no Proxmox: a ProxmoxVM whose credentials Secret is missing must stall with a reason that
says what to fix, and the operator must keep running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def test_operator_handles_a_resource_of_each_kind(
    namespace: str, kubectl: Any, start_operator: Any, kube_json: Any, wait_for: Any
) -> None:
    operator = start_operator(namespace)
    pvm = yaml.safe_load((SAMPLES / "proxmoxvm-clone.yaml").read_text())
    cluster = yaml.safe_load((SAMPLES / "k3scluster-single-server.yaml").read_text())
    for obj in (pvm, cluster):
        obj["metadata"]["namespace"] = namespace
        kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
    got_pvm = wait_for(
        lambda: (
            (o := kube_json("pvm", pvm["metadata"]["name"], "-n", namespace))
            and (o.get("status") or {}).get("observedGeneration") == 1
            and _condition(o, "Reconciling") is None  # past the acknowledgement: the pass has ended
            and o
        ),
        what="ProxmoxVM observedGeneration and the first pass's outcome",
    )
    wait_for(
        lambda: (
            ((kube_json("k3sc", cluster["metadata"]["name"], "-n", namespace) or {}).get("status") or {}).get(
                "observedGeneration"
            )
            == 1
        ),
        what="K3sCluster observedGeneration",
    )
    stalled = _condition(got_pvm, "Stalled")
    assert stalled is not None and stalled["status"] == "True" and stalled["reason"] == "SecretNotFound"
    assert "proxmox-credentials" in stalled["message"]
    ready = _condition(got_pvm, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert _condition(got_pvm, "Reconciling") is None
    # progress lives in our annotations, the finalizer is ours, and an Event says what happened
    meta = got_pvm["metadata"]
    assert "k3sdeploy.io/finalizer" in meta.get("finalizers", [])
    assert not any(key.startswith("kopf.zalando.org") for key in meta.get("annotations", {}))
    events = wait_for(
        lambda: [
            e
            for e in (kube_json("events", "-n", namespace) or {}).get("items", [])
            if e.get("reason") == "SecretNotFound"
        ],
        what="SecretNotFound event",
    )
    assert events[0]["type"] == "Warning"
    # creating the Secret later is noticed without a spec change (periodic resync), and the object
    # can still be deleted (policy Delete, but nothing was ever created)
    kubectl("delete", "pvm", pvm["metadata"]["name"], "-n", namespace, "--wait=true", "--timeout=60s")
    assert operator.alive
