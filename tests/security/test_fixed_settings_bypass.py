"""Attack (T2 tenant): change a K3s setting fixed at creation by spelling the flag so the CEL
transition rule does not recognise it, while K3s (and the operator's config rendering) still would.

K3s's command line (urfave/cli) also takes a long flag with one dash, and a K3s config file key ending
in ``+`` appends to the earlier value. Before the fix, ``-cluster-cidr=...`` and
``--cluster-cidr+=...`` were accepted as a change and rendered into the node's config file as
``cluster-cidr`` / ``cluster-cidr+``: the servers would restart with another pod network.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fixtures.kube import Kubectl
from integration.test_crds import crds  # noqa: F401 - the fixture that installs the generated CRDs
from k3s_deploy import errors
from k3s_deploy.services.k3scluster import node_config
from unit.api.cases import sample

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SPELLINGS = ["-cluster-cidr=10.50.0.0/16", "--cluster-cidr+=10.50.0.0/16", "-cluster-cidr+=10.50.0.0/16"]


def _cluster(server_args: list[str]) -> dict[str, Any]:
    obj = sample("k3scluster-single-server.yaml")
    obj["metadata"]["name"] = "bypass"
    obj["spec"]["k3s"]["serverArgs"] = server_args
    return obj


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_another_spelling_of_a_fixed_flag_is_refused_on_change(
    kubectl: Kubectl,
    crds: list[str],  # noqa: F811
    namespace: str,
    spelling: str,
) -> None:
    first = kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(_cluster(["--cluster-cidr=10.42.0.0/16"]))
    )
    assert first.returncode == 0
    changed = _cluster(["--cluster-cidr=10.42.0.0/16", spelling])
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(changed), check=False)
    assert result.returncode != 0, f"{spelling} was accepted as a change"
    assert "cannot change after the cluster is created" in result.stderr, result.stderr


@pytest.mark.parametrize("arg", ["--cluster-cidr+=10.50.0.0/16", "--Cluster-CIDR=x", "--a b=c"])
def test_the_operator_renders_only_k3s_flag_names(arg: str) -> None:
    with pytest.raises(errors.InvalidSpec, match="not a K3s flag"):
        node_config.config_keys([arg])
