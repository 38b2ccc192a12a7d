"""The CRD tells the truth about the code: the phases it lists are the phases the code sets, the
condition its descriptions name is the one raised, and `kubectl get pvm` shows why a VM is not Ready."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import yaml

from k3s_deploy import errors
from k3s_deploy.api import crdgen
from k3s_deploy.api.k3scluster import ClusterPhase, K3sClusterStatus, SshSettings
from k3s_deploy.services.k3scluster import hostkeys

OPERATOR = Path(__file__).resolve().parents[3] / "operator" / "k3s_deploy"
# status.phase = <expr> (the typed status), status["phase"] = <expr> and "phase": <expr> in the
# controllers (the lab is not the operator)
_SET = re.compile(
    r"""(?:\.phase\s*=(?!=)|\[["']phase["']\]\s*=|["']phase["']\s*:)\s*(?P<expr>[^\n]+(?:\n\s+[^\n]+\))?)"""
)


def _phases_set_in_code() -> set[str]:
    found: set[str] = set()
    for path in OPERATOR.rglob("*.py"):
        if "lab" in path.relative_to(OPERATOR).parts or path.parent.name == "api":
            continue
        for match in _SET.finditer(path.read_text()):
            found.update(re.findall(r'"([A-Z][A-Za-z]+)"', match.group("expr")))
    return found


def test_the_phase_enum_is_exactly_the_phases_the_code_sets() -> None:
    listed = set(get_args(ClusterPhase))
    in_code = _phases_set_in_code()
    assert in_code, "the scan found no phase assignment: the pattern is stale"
    assert in_code == listed, (in_code - listed, listed - in_code)
    schema = K3sClusterStatus.model_json_schema(by_alias=True)["properties"]["phase"]
    assert set(next(s for s in schema["anyOf"] if "enum" in s)["enum"]) == listed


def test_host_key_descriptions_name_the_real_reason() -> None:
    real = errors.HostKeyMismatch("x").reason
    assert real == "HostKeyChanged"
    # what the code really reports: the changed-key reason, the two GuestAgent refusals, the TOFU condition
    reported = {real, "HostKeyMismatch", errors.HostKeyUnavailable("x").reason, hostkeys.TOFU_CONDITION}
    for field in ("host_key_policy", "known_hosts"):
        description = SshSettings.model_fields[field].description or ""
        named = set(re.findall(r"HostKey[A-Za-z]+", description))
        assert real in named and named <= reported, (field, named)


def test_kubectl_get_pvm_shows_the_reason_without_wide() -> None:
    crd = yaml.safe_load(
        next(doc for doc in crdgen.render_all().split("\n---\n") if "kind: ProxmoxVM" in doc)
    )
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Reason"].get("priority", 0) == 0
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
