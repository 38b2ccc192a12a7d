"""Item 8 (docs/security.md): spec strings that reach a guest refuse control characters.

The cases are shared with tests/security/test_guest_strings.py, where the real apiserver refuses them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from k3s_deploy.api.k3scluster import K3sCluster
from k3s_deploy.api.proxmoxvm import ProxmoxVM

from .cases import sample

NO_CONTROL = "must not contain control characters"
BAD_URL = "is not an http(s) URL"
BAD_KEY = "is not an OpenSSH public key line"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithYourOwnPublicKey000000000000"


@dataclass(frozen=True)
class Hostile:
    """``value`` written at ``path`` (dotted; ``.0`` indexes a list) of sample ``base``; a field
    holding a list (``in_list``) gets ``[value]``. ``message`` is what the refusal says."""

    id: str
    base: str
    path: str
    value: str
    message: str
    in_list: bool = False

    def build(self, name: str | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(sample(self.base))
        *parents, leaf = self.path.split(".")
        node: Any = obj
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        value: Any = [self.value] if self.in_list else self.value
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
        if name:
            obj["metadata"]["name"] = name
        return obj


CLUSTER = "k3scluster-single-server.yaml"
AIRGAP = "k3scluster-airgap.yaml"
VM = "proxmoxvm-clone.yaml"
SERVER_ARGS = "spec.k3s.serverArgs"

HOSTILE: tuple[Hostile, ...] = (
    Hostile("serverArgs-newline", CLUSTER, SERVER_ARGS, "--node-label=a=b\n--token=stolen", NO_CONTROL, True),
    Hostile("agentArgs-cr", CLUSTER, "spec.k3s.agentArgs", "--node-label=a=b\r", NO_CONTROL, True),
    Hostile("serverArgs-tab", CLUSTER, SERVER_ARGS, "--disable\ttraefik", NO_CONTROL, True),
    Hostile("serverArgs-escape", CLUSTER, SERVER_ARGS, "--node-label=\x1b[2Jx=y", NO_CONTROL, True),
    Hostile("serverArgs-del", CLUSTER, SERVER_ARGS, "--node-label=x\x7f", NO_CONTROL, True),
    Hostile(
        "script-url-newline", CLUSTER, "spec.k3s.installSource.script.url", "https://get.k3s.io/\nx", BAD_URL
    ),
    Hostile("channel-server-cr", CLUSTER, "spec.k3s.channelServer", "https://update.k3s.io/v1\r", BAD_URL),
    Hostile(
        "binary-url-bell",
        AIRGAP,
        "spec.k3s.installSource.airGap.binaryURL",
        "https://m.internal/k3s\x07",
        BAD_URL,
    ),
    Hostile("tls-san-newline", CLUSTER, "spec.k3s.tlsSANs", "k3s.example\nevil", "is not a host name", True),
    Hostile(
        "ssh-key-comment-cr",
        VM,
        "spec.cloudInit.sshAuthorizedKeys.0",
        f"{KEY} me\rssh-rsa AAAA evil",
        BAD_KEY,
    ),
)


def _model(obj: dict[str, Any]) -> type[K3sCluster] | type[ProxmoxVM]:
    return K3sCluster if obj["kind"] == "K3sCluster" else ProxmoxVM


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_models_refuse_control_characters(case: Hostile) -> None:
    obj = case.build()
    with pytest.raises(ValidationError) as info:
        _model(obj).model_validate(obj)
    assert case.message in str(info.value)


@pytest.mark.parametrize(
    "arg", ["--node-label=x;touch /pwned", "--node-taint=a=$(id):NoSchedule", "--data-dir=/var/lib/k3s `x`"]
)
def test_shell_metacharacters_are_allowed_they_are_quoted_not_refused(arg: str) -> None:
    obj = sample(CLUSTER)
    obj["spec"]["k3s"]["serverArgs"] = [arg]
    assert K3sCluster.model_validate(obj).spec.k3s.server_args == [arg]


def test_ordinary_values_still_pass() -> None:
    obj = sample(CLUSTER)
    obj["spec"]["k3s"]["serverArgs"] = [
        "--disable=traefik",
        "--node-label=tier=web",
        "--kube-apiserver-arg=v=2",
    ]
    obj["spec"]["k3s"]["installSource"] = {"script": {"url": "https://get.k3s.io/?a=1#x"}}
    obj["spec"]["servers"]["template"]["cloudInit"]["sshAuthorizedKeys"] = [f"{KEY} admin@example (laptop)"]
    K3sCluster.model_validate(obj)
