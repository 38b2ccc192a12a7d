"""`k3s-deploy lab ...`: added to the operator's command line through the entry point group
``k3s_deploy.commands`` (see lab/pyproject.toml), so the operator's CLI needs no lab code."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def lab() -> None:
    """The local lab: control plane, Proxmox VE simulator, guests, operator, a sample cluster."""


@lab.command("build")
def lab_build() -> None:
    """Build (once, cached by version) the control-plane binaries the lab and the tests use."""
    from k3s_deploy_lab.controlplane.build import BuildError, ensure_binaries

    try:
        binaries = ensure_binaries()
    except BuildError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, path in binaries.items():
        click.echo(f"{name}: {path}")


@lab.command("up")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".lab"), show_default=True)
@click.option(
    "--components",
    default="all",
    show_default=True,
    help="Comma-separated subset of: controlplane, pve, guests, operator, cluster (or 'all').",
)
@click.option("--kubeconfig", type=click.Path(path_type=Path), default=None, help="Use this cluster instead.")
@click.option("--detach", is_flag=True, help="Return once everything is up; `lab down` stops it.")
@click.option(
    "--block",
    default=None,
    help="Loopback block for the guests' addresses, e.g. 127.42.0.0/22 (default: a free one is leased).",
)
def lab_up(
    directory: Path, components: str, kubeconfig: Path | None, detach: bool, block: str | None
) -> None:
    """Start the lab in DIR; stay in the foreground until interrupted unless --detach."""
    from k3s_deploy_lab.stack import parse_components, up

    sys.exit(up(directory, parse_components(components), kubeconfig=kubeconfig, detach=detach, block=block))


@lab.command("serve", hidden=True)
@click.option("--dir", "directory", type=click.Path(path_type=Path), required=True)
@click.option("--components", required=True)
@click.option("--kubeconfig", type=click.Path(path_type=Path), default=None)
@click.option("--block", default=None)
def lab_serve(directory: Path, components: str, kubeconfig: Path | None, block: str | None) -> None:
    """Run the lab supervisor in the foreground (what `lab up` runs, detached or not)."""
    from k3s_deploy_lab.stack import parse_components, serve

    sys.exit(serve(directory, parse_components(components), kubeconfig=kubeconfig, block=block))


@lab.command("down")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".lab"), show_default=True)
def lab_down(directory: Path) -> None:
    """Stop everything `lab up` started in DIR and leave no process behind."""
    from k3s_deploy_lab.stack import down

    sys.exit(down(directory))
