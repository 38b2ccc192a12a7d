"""spec.ssh.connectTimeoutSeconds reaches every SSH connection the cluster controller opens."""

from __future__ import annotations

from k3s_deploy.ports.ssh import SshTarget

from .day2_world import World, body, bump


async def test_every_ssh_target_carries_the_spec_connect_timeout() -> None:
    w = World()
    b = body(
        1,
        1,
        ssh={"privateKeySecretRef": {"name": "ssh", "key": "ssh-privatekey"}, "connectTimeoutSeconds": 4},
    )
    seen: list[tuple[str, float | None]] = []
    check = w.ssh._check

    def recording(target: SshTarget) -> object:
        seen.append((target.host, target.connect_timeout_s))
        return check(target)

    w.ssh._check = recording  # type: ignore[method-assign]
    await w.pass_(b)
    await w.settle(b)
    b["spec"]["agents"]["replicas"] = 0  # scale-down: the uninstall connection is built elsewhere
    bump(b)
    await w.settle(b)
    assert w.of("uninstall") == ["demo-agent-0"]
    assert seen and {limit for _, limit in seen} == {4.0}, seen
