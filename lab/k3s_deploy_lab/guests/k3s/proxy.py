"""A server's own ``<ip>:6443``: a byte-for-byte TCP proxy to the cluster's apiserver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

API_PORT = 6443


class TcpProxy:
    """``<server-ip>:6443`` -> the cluster's apiserver, byte for byte (TLS passes through). ``target``
    is asked at each connection (the apiserver's port changes when it restarts)."""

    def __init__(self, host: str, target: Callable[[], tuple[str, int]]) -> None:
        self.host = host
        self.target = target
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, API_PORT, reuse_address=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target())
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
