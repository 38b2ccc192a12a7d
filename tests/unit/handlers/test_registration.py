"""Handlers are registered by the runner into its registry, never as a side effect of an import."""

from __future__ import annotations

import subprocess
import sys

import kopf

from k3s_deploy.handlers import k3scluster_entry, proxmoxvm


def ids(registry: kopf.OperatorRegistry) -> dict[str, list[str]]:
    kinds = {
        "watching": registry._watching,
        "changing": registry._changing,
        "spawning": registry._spawning,
        "activities": registry._activities,
    }
    return {kind: sorted(h.id for h in r.get_all_handlers()) for kind, r in kinds.items()}


def test_importing_the_handlers_registers_nothing() -> None:
    # a fresh interpreter: this process may have imported the handlers long ago
    code = (
        "import kopf, k3s_deploy.handlers.k3scluster, k3s_deploy.handlers.proxmoxvm, k3s_deploy.runner\n"
        "r = kopf.get_default_registry()\n"
        "print(sum(len(list(x.get_all_handlers())) for x in (r._watching, r._changing, r._spawning)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_register_puts_both_kinds_and_the_peering_watch_into_the_given_registry() -> None:
    registry = kopf.OperatorRegistry()
    k3scluster_entry.register(registry)
    proxmoxvm.register(registry, peering_clusterwide=True)
    assert ids(registry) == {
        "watching": ["k3scluster-child-wake", "k3scluster-wake", "peering-gate", "wake"],
        "changing": ["finalize", "k3scluster-finalize"],
        "spawning": ["k3scluster-reconcile"],
        "activities": ["stop_scheduler"],
    }


def test_standalone_has_no_peering_watch() -> None:
    registry = kopf.OperatorRegistry()
    proxmoxvm.register(registry)
    assert "peering-gate" not in ids(registry)["watching"]
