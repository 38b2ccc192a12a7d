"""`k3s-deploy discover` against the Proxmox VE simulator: what a discovery would adopt, read-only.

The sample inventory holds adoptable VMs 100 (pve1, k3s-server), 101 (pve2) and 102 (pve3, k3s-agent),
and billing-db 110 (pve1, tag prod, not marked adoptable).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from k3s_deploy.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _cluster(discovery: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "K3sCluster",
        "metadata": {"name": "legacy", "namespace": "team"},
        "spec": {
            "credentialsRef": {"name": "pve"},
            "k3s": {"version": "v1.31.4+k3s1"},
            "ssh": {"privateKeySecretRef": {"name": "ssh", "key": "ssh-privatekey"}},
            "discovery": discovery,
        },
    }


def _secret(sim: Any) -> dict[str, Any]:
    data = {"url": sim.url, "tokenId": sim.token_id, "tokenSecret": sim.token_secret,
            "caCert": Path(sim.ca).read_text()}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pve", "namespace": "team"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, ["discover", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _only_reads(sim: Any) -> dict[str, int]:
    calls = sim.counts()
    assert calls, "the command made no Proxmox call at all"
    assert all(key.startswith("GET ") for key in calls), calls
    return calls


def test_tags_table_and_json_with_the_secret_manifest(pve_sim: Any, tmp_path: Path) -> None:
    api = pve_sim.api()
    api.nodes("pve1").qemu(110).config.put(tags="prod;k3s-agent")  # an unmarked VM that the tags select
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [_secret(pve_sim), _cluster({"tags": {"servers": ["k3s-server"], "agents": ["k3s-agent"]}})]
        )
    )
    pve_sim.reset_counts()

    table = _run(["-f", str(manifest), "--credentials", str(manifest)]).output
    servers, agents = table.split("\n\nagents:\n")[0], table.split("\n\nagents:\n")[1]
    assert servers.startswith("servers:\nNODE") and "legacy-k3s-server-1" in servers
    rows = {line.split()[1]: line.split() for line in agents.splitlines()[1:4]}
    assert set(rows) == {"101", "102", "110"}
    assert rows["101"][0] == "pve2" and rows["101"][5] == "yes"
    assert rows["110"][2] == "billing-db" and rows["110"][5:] == ["no", "AdoptionNotAllowed"]
    assert "pve1/110: VM pve1/110 (billing-db) is not marked as adoptable" in table

    out = json.loads(_run(["-f", str(manifest), "--credentials", str(manifest), "-o", "json"]).output)
    assert out["mode"] == "tags" and [s["vmid"] for s in out["servers"]] == [100]
    assert [(a["vmid"], a["adoptable"], a["reason"]) for a in out["agents"]] == [
        (101, True, None),
        (102, True, None),
        (110, False, "AdoptionNotAllowed"),
    ]
    assert (
        out["servers"][0]["member"] == "legacy-server-100"
        and "k3sdeploy-adoptable" in out["servers"][0]["tags"]
    )
    calls = _only_reads(pve_sim)
    assert set(calls) == {"GET /cluster/resources"}


def test_locations_with_flags_env_and_the_operators_adoption_settings(pve_sim: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(
        yaml.safe_dump(
            _cluster({"locations": {"servers": ["pve1/100"], "agents": ["pve1/110", "pve2/102", "pve3/555"]}})
        )
    )
    env = {"K3SD_PROXMOX_URL": pve_sim.url, "K3SD_PROXMOX_TOKEN_ID": pve_sim.token_id,
           "K3SD_PROXMOX_TOKEN_SECRET": pve_sim.token_secret, "K3SD_PROXMOX_CA_CERT": str(pve_sim.ca)}  # fmt: skip
    pve_sim.reset_counts()

    out = json.loads(_run(["-f", str(manifest), "--output", "json"], env=env).output)
    assert out["mode"] == "locations"
    assert [(s["node"], s["vmid"], s["adoptable"]) for s in out["servers"]] == [("pve1", 100, True)]
    verdicts = {a["vmid"]: (a["adoptable"], a["reason"], a["status"]) for a in out["agents"]}
    assert verdicts[110][:2] == (False, "AdoptionNotAllowed")
    assert verdicts[102][:2] == (False, "VMNotFound")  # 102 lives on pve3, not pve2
    assert verdicts[555] == (False, "VMNotFound", "missing")

    # The operator's adoption settings apply as they do to the operator: K3SD_ADOPTABLE_TAG=prod.
    marked = json.loads(
        _run(["-f", str(manifest), "-o", "json"], env={**env, "K3SD_ADOPTABLE_TAG": "prod"}).output
    )
    assert marked["servers"][0]["reason"] == "AdoptionNotAllowed"
    assert marked["agents"][0]["vmid"] == 110 and marked["agents"][0]["adoptable"] is True
    _only_reads(pve_sim)


def test_tls_stays_verified_and_bad_input_says_what_to_fix(pve_sim: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(yaml.safe_dump(_cluster({"tags": {"servers": ["k3s-server"]}})))
    flags = ["-f", str(manifest), "--url", pve_sim.url, "--token-id", pve_sim.token_id,
             "--token-secret", pve_sim.token_secret]  # fmt: skip
    untrusted = CliRunner().invoke(
        main, ["discover", *flags], env={"SSL_CERT_FILE": "", "REQUESTS_CA_BUNDLE": ""}
    )
    assert untrusted.exit_code == 1 and "TLSVerificationFailed" in untrusted.output
    assert pve_sim.token_secret not in untrusted.output
    no_creds = CliRunner().invoke(main, ["discover", "-f", str(manifest)])
    assert no_creds.exit_code == 1 and "--credentials FILE" in no_creds.output
