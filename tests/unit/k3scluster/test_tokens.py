"""Join tokens: the secure server token read from the first server, a separate agent token, and
clusters from before either keep working."""

from __future__ import annotations

import pytest

from k3s_deploy import errors
from k3s_deploy.services.k3scluster import tokens

from .fakes import AGENT_TOKEN, FAKE_CA_HASH, K3S_YAML, SERVER_TOKEN
from .test_reconcile import NS, World, cluster_body, cond

HASH = "cd" * 32


def test_each_install_gets_only_the_token_it_needs() -> None:
    t = tokens.JoinTokens(server="pw", secure=f"K10{HASH}::server:pw", agent="ag")
    assert t.env("init") == [("K3S_TOKEN", "pw"), ("K3S_AGENT_TOKEN", "ag")]
    assert t.env("join-server") == [("K3S_TOKEN", f"K10{HASH}::server:pw"), ("K3S_AGENT_TOKEN", "ag")]
    assert t.env("agent") == [("K3S_TOKEN", f"K10{HASH}::node:ag")]
    legacy = tokens.JoinTokens(
        server="pw", secure=f"K10{HASH}::server:pw", agent="ag", agents_use_agent_token=False
    )
    assert legacy.env("agent") == [("K3S_TOKEN", f"K10{HASH}::server:pw")]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"K10" + b"ab" * 32 + b"::server:pw" + b"x" * 2000, "TokenInvalid"),
        (b"pw\n", "TokenInvalid"),
        (b"K10" + b"ab" * 32 + b"::node:pw\n", "TokenInvalid"),
        (b"K10" + b"ab" * 32 + b"::server:pw\nexport EVIL=1\n", "TokenInvalid"),
        (b"K10" + b"ab" * 32 + b"::server:other\n", "TokenMismatch"),
    ],
)
def test_a_guest_written_token_is_checked(raw: bytes, reason: str) -> None:
    with pytest.raises(errors.PermanentError) as info:
        tokens.parse_guest_token(raw, password="pw", what="token")
    assert info.value.reason == reason


async def test_a_hostile_token_file_stops_every_join() -> None:
    w, body = World(), cluster_body(1, 1)
    await w.pass_(body)
    w.boot()
    server_ip = "10.0.0.10"
    original = w.ssh.run

    async def run_then_tamper(target, command, **kwargs):  # type: ignore[no-untyped-def]
        result = await original(target, command, **kwargs)
        if target.host == server_ip and w.ssh.hosts[server_ip].files:
            w.ssh.hosts[server_ip].files[SERVER_TOKEN] = "K10" + "ab" * 32 + "::server:not-ours\n"
        return result

    w.ssh.run = run_then_tamper  # type: ignore[method-assign]
    out = await w.pass_(body)
    assert cond(out, "Stalled")["reason"] == "TokenMismatch"
    assert w.ssh.installs() == [server_ip], "the agent did not join"


async def test_a_cluster_from_before_secure_and_agent_tokens_keeps_working() -> None:
    w, body = World(), cluster_body(1, 2)
    # the old operator: a short token only, the server installed without --agent-token
    w.objects.secrets[(NS, "demo-token")] = {
        "data": {"token": b"old-plain-token"},
        "labels": {"k3sdeploy.io/cluster": "demo", "app.kubernetes.io/managed-by": "k3s-deploy"},
        "owner": None,
    }
    await w.pass_(body)
    w.boot()
    server = w.ssh.hosts["10.0.0.10"]
    server.version, server.kubeconfig = "v1.31.4+k3s1", K3S_YAML
    server.files = {SERVER_TOKEN: f"K10{FAKE_CA_HASH}::server:old-plain-token\n"}
    server.files[AGENT_TOKEN] = server.files[SERVER_TOKEN]
    server.scripts.append("sh x server --node-name demo-server-0")
    events = []
    for _ in range(4):
        out = await w.pass_(body)
        events += [e.reason for e in out.events]
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    assert "SecureTokenStored" in events
    data = w.objects.secrets[(NS, "demo-token")]["data"]
    assert data["token"].decode() == f"K10{FAKE_CA_HASH}::server:old-plain-token"
    assert data["agentToken"]
    assert "10.0.0.10" not in w.ssh.installs(), "the server was not reinstalled"
    # its agents join with the secure server token until the servers run with the agent token
    for ip in ("10.0.0.11", "10.0.0.12"):
        assert w.ssh.hosts[ip].join_token == f"K10{FAKE_CA_HASH}::server:old-plain-token"


async def test_a_user_token_stays_in_the_users_secret_and_agents_get_their_own() -> None:
    w, body = World(), cluster_body(1, 1)
    body["spec"]["k3s"]["tokenSecretRef"] = {"name": "mine", "key": "t"}
    w.objects.secrets[(NS, "mine")] = {"data": {"t": b"user-secret"}, "labels": {}, "owner": None}
    await w.pass_(body)
    w.boot()
    for _ in range(3):
        out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True"
    assert w.objects.secrets[(NS, "mine")]["data"] == {"t": b"user-secret"}
    own = w.objects.secrets[(NS, "demo-token")]["data"]
    assert own["token"].decode() == f"K10{FAKE_CA_HASH}::server:user-secret"
    agent = w.ssh.hosts["10.0.0.11"]
    assert agent.join_token == f"K10{FAKE_CA_HASH}::node:{own['agentToken'].decode()}"
    assert "user-secret" not in agent.scripts[-1]
    assert out.status["tokenSecretRef"] == {"name": "mine", "key": "t"}


async def test_a_server_without_a_token_file_yet_holds_back_only_joins() -> None:
    w, body = World(), cluster_body(1, 0)
    await w.pass_(body)
    w.boot()
    original = w.ssh.run

    async def install_without_token_file(target, command, **kwargs):  # type: ignore[no-untyped-def]
        result = await original(target, command, **kwargs)
        for path in (SERVER_TOKEN, AGENT_TOKEN):  # the settings files stay: only K3s's token is late
            w.ssh.hosts[target.host].files.pop(path, None)
        return result

    w.ssh.run = install_without_token_file  # type: ignore[method-assign]
    out = await w.pass_(body)
    assert cond(out, "Ready")["status"] == "True", out.status["conditions"]
    token = w.objects.secrets[(NS, "demo-token")]["data"]["token"].decode()
    assert not token.startswith("K10")
    w.ssh.run = original  # type: ignore[method-assign]
    w.ssh.hosts["10.0.0.10"].files[SERVER_TOKEN] = f"K10{FAKE_CA_HASH}::server:{token}\n"
    out = await w.pass_(body)
    assert (
        w.objects.secrets[(NS, "demo-token")]["data"]["token"].decode()
        == f"K10{FAKE_CA_HASH}::server:{token}"
    )
    assert [e.reason for e in out.events] == ["SecureTokenStored"]
