"""The SSH adapter, loaded at its first use.

asyncssh and the parts of cryptography it loads are about 5 MiB of the operator's memory before the
first object; an operator that only handles ProxmoxVMs never opens an SSH session, so it never pays
them. The first K3sCluster step that needs SSH loads the real adapter (:mod:`.ssh`) once.
"""

from __future__ import annotations

from pathlib import Path

from k3s_deploy.ports.ssh import CommandResult, SshRunner, SshTarget


class LazySshRunner:
    """An :class:`~k3s_deploy.ports.ssh.SshRunner` that builds the asyncssh runner when first used."""

    def __init__(self, *, max_output_bytes: int) -> None:
        self._max_output_bytes = max_output_bytes
        self._runner: SshRunner | None = None

    def _load(self) -> SshRunner:
        if self._runner is None:
            from k3s_deploy.adapters.ssh import AsyncSshRunner

            self._runner = AsyncSshRunner(max_output_bytes=self._max_output_bytes)
        return self._runner

    async def run(
        self,
        target: SshTarget,
        command: str,
        *,
        input: str | None = None,
        sudo: bool | None = None,
        timeout_s: float = 60.0,
        check: bool = False,
    ) -> CommandResult:
        return await self._load().run(
            target, command, input=input, sudo=sudo, timeout_s=timeout_s, check=check
        )

    async def fetch(
        self, target: SshTarget, path: str, *, sudo: bool | None = None, timeout_s: float = 30.0
    ) -> bytes:
        return await self._load().fetch(target, path, sudo=sudo, timeout_s=timeout_s)

    async def upload(
        self,
        target: SshTarget,
        local_path: Path,
        remote_path: str,
        *,
        mode: int = 0o644,
        sudo: bool | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        await self._load().upload(target, local_path, remote_path, mode=mode, sudo=sudo, timeout_s=timeout_s)

    async def host_key(self, target: SshTarget) -> str:
        return await self._load().host_key(target)
