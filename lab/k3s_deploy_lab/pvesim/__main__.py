"""`python -m k3s_deploy_lab.pvesim serve --inventory FILE --state FILE --dir DIR [--host H] [--port P]`."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from pathlib import Path

from k3s_deploy_lab.pvesim.inventory import SAMPLE
from k3s_deploy_lab.pvesim.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k3s_deploy_lab.pvesim")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the simulator until SIGTERM")
    run.add_argument(
        "--inventory", type=Path, default=SAMPLE, help="inventory YAML (used when no state exists)"
    )
    run.add_argument(
        "--state", type=Path, required=True, help="state file (created, then kept across restarts)"
    )
    run.add_argument("--dir", type=Path, required=True, help="directory for pve.json and TLS files")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=0)
    run.add_argument(
        "--scale", type=float, default=None, help="override timing.scale (e.g. 0.1 for a quick demo)"
    )
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        print("pvesim binds to loopback addresses only", file=sys.stderr)
        return 2
    asyncio.run(serve(args.inventory, args.state, args.dir, args.host, args.port, scale=args.scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
