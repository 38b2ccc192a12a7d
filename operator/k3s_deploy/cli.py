"""Command line: `k3s-deploy run | crds ... | lab ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
@click.version_option(package_name="k3s-deploy")
def main() -> None:
    """Turn Proxmox VE virtual machines into K3s clusters, declaratively."""


@main.command()
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Namespace to watch (repeatable).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (cluster-wide install).")
@click.option("--standalone/--peering", default=None, help="Disable or enable kopf peering (HA).")
@click.option("--liveness", default=None, help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--adoptable-tag",
    default=None,
    help="Proxmox tag that allows adopting a VM (default k3sdeploy-adoptable).",
)
@click.option("--adoptable-pool", default=None, help="Proxmox pool whose VMs may be adopted.")
@click.option(
    "--fetch-allowed-hosts",
    default=None,
    help="Hosts/networks the operator may fetch from for tenants (comma-separated; see docs/operations.md).",
)
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool | None,
    liveness: str | None,
    verbose: bool,
    adoptable_tag: str | None,
    adoptable_pool: str | None,
    fetch_allowed_hosts: str | None,
) -> None:
    """Run the operator (kopf) against the current kubeconfig or in-cluster config."""
    from k3s_deploy.runner import run_operator
    from k3s_deploy.settings import OperatorSettings

    overrides: dict[str, object] = {}
    if namespaces:
        overrides["namespaces"] = list(namespaces)
    if all_namespaces:
        overrides["namespaces"] = []
    if standalone is not None:
        overrides["standalone"] = standalone
    if liveness is not None:
        overrides["liveness_endpoint"] = liveness
    if verbose:
        overrides["log_level"] = "DEBUG"
    if adoptable_tag is not None:
        overrides["adoptable_tag"] = adoptable_tag
    if adoptable_pool is not None:
        overrides["adoptable_pool"] = adoptable_pool
    if fetch_allowed_hosts is not None:
        overrides["fetch_allowed_hosts"] = fetch_allowed_hosts
    settings = OperatorSettings(**overrides)  # type: ignore[arg-type]
    sys.exit(run_operator(settings))


@main.group()
def crds() -> None:
    """Generate or check the CRD YAML made from the pydantic models."""


@crds.command("generate")
@click.option("--out", type=click.Path(path_type=Path), default=Path("crds"), show_default=True)
@click.option(
    "--manifests",
    type=click.Path(path_type=Path),
    default=Path("manifests/base/crds"),
    show_default=True,
    help="Also refresh the copies kustomize installs (skipped when the folder does not exist).",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    default=Path("docs/crd-reference.md"),
    show_default=True,
    help="Also regenerate the CRD reference page (skipped when its folder does not exist).",
)
def crds_generate(out: Path, manifests: Path, reference: Path) -> None:
    """Write crds/*.yaml (and the kustomize copies and the reference doc) from the models."""
    from k3s_deploy.api.crdgen import write_crds
    from k3s_deploy.api.reference import render_reference

    for path in write_crds(out):
        click.echo(f"wrote {path}")
    if manifests.is_dir():
        for path in write_crds(manifests):
            click.echo(f"wrote {path}")
    if reference.parent.is_dir():
        reference.write_text(render_reference())
        click.echo(f"wrote {reference}")


@crds.command("check")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("crds"), show_default=True)
def crds_check(directory: Path) -> None:
    """Exit non-zero when crds/ differs from what the models generate."""
    from k3s_deploy.api.crdgen import drifted_files

    drift = drifted_files(directory)
    if drift:
        click.echo(
            "CRDs drifted from the models; run `k3s-deploy crds generate`: " + ", ".join(drift), err=True
        )
        sys.exit(1)
    click.echo("crds are up to date")


@crds.command("print")
def crds_print() -> None:
    """Print every CRD as one YAML stream (for `kubectl apply -f -`)."""
    from k3s_deploy.api.crdgen import render_all

    click.echo(render_all(), nl=False)


@main.group()
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
