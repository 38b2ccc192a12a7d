"""`python -m k3s_deploy_lab.guests serve --dir DIR`: the lab guests process (SSH servers + K3s stand-in)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from k3s_deploy_lab.guests.service import GuestsService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k3s_deploy_lab.guests")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="follow the simulator's guests and serve them until SIGTERM")
    serve.add_argument("--dir", type=Path, required=True, help="lab dir holding pve.json")
    serve.add_argument("--pve-json", type=Path, default=None, help="default: DIR/pve.json")
    serve.add_argument("--state-dir", type=Path, default=None, help="default: DIR/guests")
    serve.add_argument("--ssh-port", type=int, required=True, help="SSH port on every guest address")
    serve.add_argument("--http-port", type=int, default=0, help="installer/control HTTP port on 127.0.0.1")
    args = parser.parse_args(argv)
    service = GuestsService(
        pve_json=args.pve_json or args.dir / "pve.json",
        state_dir=args.state_dir or args.dir / "guests",
        ssh_port=args.ssh_port,
        http_port=args.http_port,
    )
    return asyncio.run(_serve(service))


async def _serve(service: GuestsService) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with service.running():
        await stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
