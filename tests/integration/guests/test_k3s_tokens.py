"""The K3s stand-in's tokens behave as K3s's: the secure server token pins the CA, agents have their own.

- the first server writes ``server/token`` as ``K10<sha256 of the CA PEM on disk>::server:<secret>``;
- ``--agent-token`` gives ``server/agent-token`` (``K10<hash>::node:<secret>``): it joins agents, and
  never a server;
- a secure token with another CA hash is refused before any credential is sent, with K3s's words;
- the first server refuses a secure token naming a CA it does not have.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable

import pytest

from fixtures.guests import LabGuest, lab_net

pytestmark = pytest.mark.integration
NET = lab_net()
V1 = "v1.31.4+k3s1"
StartGuest = Callable[..., Awaitable[LabGuest]]


async def test_secure_server_token_agent_token_and_ca_pinning(start_guest: StartGuest) -> None:
    init = await start_guest(341, f"{NET}41", name="tok-a")
    joiner = await start_guest(342, f"{NET}42", name="tok-b")
    agent = await start_guest(343, f"{NET}43", name="tok-c")
    env = f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=server-secret K3S_AGENT_TOKEN=agent-secret"
    first = await init.install_k3s("server", "--cluster-init", env=env)
    assert first.exit_status == 0, first.stderr

    token = (await init.run("sudo cat /var/lib/rancher/k3s/server/token", check=True)).stdout.strip()
    ca_pem = (await init.run("sudo cat /var/lib/rancher/k3s/server/tls/server-ca.crt", check=True)).stdout
    digest = hashlib.sha256(ca_pem.encode()).hexdigest()
    assert token == f"K10{digest}::server:server-secret"
    agent_token = (
        await init.run("sudo cat /var/lib/rancher/k3s/server/agent-token", check=True)
    ).stdout.strip()
    assert agent_token == f"K10{digest}::node:agent-secret"

    url = f"https://{NET}41:6443"
    as_server = await joiner.install_k3s(
        "server", "--server", url, env=f"INSTALL_K3S_VERSION={V1} K3S_TOKEN={agent_token}"
    )
    assert as_server.exit_status != 0
    assert f"{url}/v1-k3s/server-bootstrap: 401 Unauthorized" in as_server.stderr
    short_agent = await joiner.install_k3s(
        "server", "--server", url, env=f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=agent-secret"
    )
    assert short_agent.exit_status != 0 and "401 Unauthorized" in short_agent.stderr

    other_ca = f"K10{'ab' * 32}::server:server-secret"
    wrong_hash = await joiner.install_k3s(
        "server", "--server", url, env=f"INSTALL_K3S_VERSION={V1} K3S_TOKEN={other_ca}"
    )
    assert wrong_hash.exit_status != 0
    assert (
        f"token CA hash does not match the Cluster CA certificate hash: {'ab' * 32} != {digest}"
        in wrong_hash.stderr
    )

    joined = await joiner.install_k3s(
        "server", "--server", url, env=f"INSTALL_K3S_VERSION={V1} K3S_TOKEN={token}"
    )
    assert joined.exit_status == 0, joined.stderr
    agent_joined = await agent.install_k3s(
        env=f"INSTALL_K3S_VERSION={V1} K3S_URL={url} K3S_TOKEN={agent_token}"
    )
    assert agent_joined.exit_status == 0, agent_joined.stderr
    env_file = (await agent.run("sudo cat /etc/systemd/system/k3s-agent.service.env", check=True)).stdout
    assert "agent-secret" in env_file and "server-secret" not in env_file


async def test_first_server_refuses_a_secure_token_for_another_ca(start_guest: StartGuest) -> None:
    init = await start_guest(344, f"{NET}44", name="tok-d")
    refused = await init.install_k3s(
        "server", env=f"INSTALL_K3S_VERSION={V1} K3S_TOKEN=K10{'cd' * 32}::server:secret"
    )
    assert refused.exit_status != 0
    assert re.search(r"token CA hash does not match the Cluster CA certificate hash: (cd){32} != [0-9a-f]{64}",
                     refused.stderr)  # fmt: skip
