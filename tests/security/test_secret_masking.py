"""Item 7: no Secret value reaches the operator's log, an Event or a status.

Three runs in one namespace: a small cluster to Ready (generated join token), a ProxmoxVM whose
credentials Secret holds a wrong password (Stalled), and a cluster whose tenant-chosen installer
(T1: the author of a K3sCluster is root on its guests) fails and prints the join token it was given.
Then every value of every Secret the operator read (each line of multi-line ones) is looked for in
the operator's log, every Event of the namespace and every K3sCluster and ProxmoxVM.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3s_deploy_lab import sample_cluster

from .conftest import Lab
from .hostile_guest import HostileInstaller

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# The masking contract (k3s_deploy.secrets_mask): whole values from 6 characters, each line of a
# multi-line value from 8 characters (PEM armour lines such as -----BEGIN ...----- are not secret).
MIN_VALUE = 6
MIN_LINE = 8

# What a hostile installer does with the token it is handed: print it where the operator looks.
HOSTILE_INSTALLER = """#!/bin/sh
echo "[INFO]  Using $INSTALL_K3S_VERSION as release; token $K3S_TOKEN"
echo "[ERROR]  join refused for $K3S_TOKEN" >&2
echo "K3S_TOKEN=$K3S_TOKEN" >&2
printf '%s\\n' "$K3S_TOKEN" >&2
exit 1
"""


@pytest.fixture
def hostile_installer() -> Iterator[str]:
    """An install script server on loopback (a URL the tenant chose)."""
    with HostileInstaller(HOSTILE_INSTALLER) as installer:
        yield installer.url


def _is_armour(line: str) -> bool:
    return line.startswith("-----") and line.endswith("-----")


def needles(value: str) -> set[str]:
    """What must never appear: the value, and each line of it (the masker's contract)."""
    found = set()
    if len(value.strip()) >= MIN_VALUE:
        found.add(value.strip())
    for line in value.splitlines():
        line = line.strip()
        if len(line) >= MIN_LINE and not _is_armour(line):
            found.add(line)
    return found


def secret_values(lab: Lab, name: str) -> dict[str, str]:
    secret = lab.get("secret", name)
    assert secret, f"no Secret {name}"
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def haystacks(lab: Lab) -> dict[str, str]:
    """The operator's log, every Event, every K3sCluster and ProxmoxVM (status, annotations, all)."""
    out = {"operator log": lab.operator.logs()}
    for event in (lab.get("events") or {}).get("items", []):
        out[f"Event {event['metadata']['name']}"] = json.dumps(event, ensure_ascii=False)
    for kind in ("k3sc", "pvm"):
        for obj in (lab.get(kind) or {}).get("items", []):
            out[f"{kind} {obj['metadata']['name']}"] = json.dumps(obj, ensure_ascii=False)
    return out


def _wait_pvm_condition(lab: Lab, name: str, type_: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = lab.get("pvm", name) or {}
        for c in (last.get("status") or {}).get("conditions") or []:
            if c["type"] == type_ and c["status"] == "True":
                return dict(c)
        time.sleep(0.5)
    raise AssertionError(f"ProxmoxVM {name}: {type_} never True; last {last}")


def test_no_secret_value_in_logs_events_or_status(lab: Lab, hostile_installer: str) -> None:
    ns = lab.namespace
    join_token = f"tenant-join-{secrets.token_hex(16)}"
    wrong_password = f"wrong-{secrets.token_urlsafe(18)}"
    lab.apply(
        sample_cluster.secret_manifest("leaky-join", ns, {"token": join_token}),
        sample_cluster.secret_manifest(
            "bad-credentials",
            ns,
            {
                "url": lab.pve["url"],
                "username": "root@pam",
                "password": wrong_password,
                "caCert": Path(lab.pve["caCert"]).read_text(),
            },
        ),
    )
    # 1. a full run to Ready, with the operator's generated token
    lab.apply(lab.cluster("good", servers=1, agents=1))
    # 2. a failed login: wrong Proxmox password
    vm = {
        "apiVersion": "k3sdeploy.io/v1alpha1",
        "kind": "ProxmoxVM",
        "metadata": {"name": "badlogin", "namespace": ns},
        "spec": {
            "credentialsRef": {"name": "bad-credentials"},
            "allowedNodes": sample_cluster.PVE_NODES,
            "source": {"clone": {"template": {"name": sample_cluster.TEMPLATE}}},
        },
    }
    lab.apply(vm)
    # 3. a failed install whose installer (chosen by the tenant) prints the join token
    leaky = lab.cluster("leaky", servers=1, agents=0)
    leaky["spec"]["k3s"]["tokenSecretRef"] = {"name": "leaky-join", "key": "token"}
    leaky["spec"]["k3s"]["installSource"] = {"script": {"url": hostile_installer}}
    lab.apply(leaky)

    lab.wait_ready("good", timeout=480)
    stalled_login = _wait_pvm_condition(lab, "badlogin", "Stalled", timeout=120)
    assert stalled_login["reason"] in ("CredentialsInvalid", "CredentialsError", "AuthenticationFailed") or (
        "credentials" in stalled_login["message"].lower()
    ), stalled_login
    stalled_install = lab.wait_condition("leaky", "Stalled", timeout=300)
    assert stalled_install["reason"] == "K3sInstallFailed", stalled_install
    # the failure is still reported in words: the installer's last lines, the token masked
    assert "join refused for" in stalled_install["message"], stalled_install
    time.sleep(8)  # a few resync periods: retries, repeated Events and log lines had their chance

    read_by_operator = ["proxmox-credentials", "bad-credentials", "k3s-ssh-key", "leaky-join", "good-token"]
    values: dict[str, str] = {}
    for name in read_by_operator:
        for key, value in secret_values(lab, name).items():
            values[f"{name}/{key}"] = value
    # the admin kubeconfig the operator wrote: its client key is as secret as any
    kubeconfig = yaml.safe_load(secret_values(lab, "good-kubeconfig")["value"])
    for user in kubeconfig.get("users") or []:
        key_data = (user.get("user") or {}).get("client-key-data")
        if key_data:
            values[f"good-kubeconfig/{user['name']}/client-key-data"] = key_data
            values[f"good-kubeconfig/{user['name']}/client-key"] = base64.b64decode(key_data).decode()
    assert join_token == values["leaky-join/token"] and wrong_password == values["bad-credentials/password"]

    hits = [
        f"{where}: {secret} ({needle[:12]}...)"
        for where, text in haystacks(lab).items()
        for secret, value in values.items()
        for needle in needles(value)
        if needle in text
    ]
    assert not hits, "Secret values found:\n" + "\n".join(sorted(hits))
