"""Command line: `k3s-deploy run | discover | crds ... | lab ...` (`lab` comes from the k3s-deploy-lab
distribution)."""

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


@main.command()
@click.option("-f", "--filename", "manifest", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True, help="File with the K3sCluster manifest whose spec.discovery is evaluated.")  # fmt: skip
@click.option("--credentials", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="File with the credentials Secret manifest (the one spec.credentialsRef names).")  # fmt: skip
@click.option("--url", envvar="K3SD_PROXMOX_URL", default=None, help="Proxmox URL, https://host:8006.")
@click.option(
    "--token-id", envvar="K3SD_PROXMOX_TOKEN_ID", default=None, help="API token id, user@realm!name."
)
@click.option("--token-secret", envvar="K3SD_PROXMOX_TOKEN_SECRET", default=None, help="API token secret.")
@click.option("--ca-cert", envvar="K3SD_PROXMOX_CA_CERT", type=click.Path(path_type=Path), default=None,
              help="PEM file of the CA that signed the Proxmox certificate.")  # fmt: skip
@click.option("--fingerprint", envvar="K3SD_PROXMOX_FINGERPRINT", default=None,
              help="Pin the Proxmox certificate by SHA-256 fingerprint (default: spec.fingerprint).")  # fmt: skip
@click.option("--adoptable-tag", envvar="K3SD_ADOPTABLE_TAG", default=None,
              help="Proxmox tag that allows adopting a VM, as the operator's (default k3sdeploy-adoptable).")  # fmt: skip
@click.option("--adoptable-pool", envvar="K3SD_ADOPTABLE_POOL", default=None,
              help="Proxmox pool whose VMs may be adopted, as the operator's.")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def discover(
    manifest: Path,
    credentials: Path | None,
    url: str | None,
    token_id: str | None,
    token_secret: str | None,
    ca_cert: Path | None,
    fingerprint: str | None,
    adoptable_tag: str | None,
    adoptable_pool: str | None,
    output: str,
) -> None:
    """List the VMs spec.discovery would adopt, per role, and whether each may be adopted (read-only)."""
    from k3s_deploy import discover as d
    from k3s_deploy.services.ownership import AdoptionPolicy
    from k3s_deploy.settings import OperatorSettings

    overrides = {"adoptable_tag": adoptable_tag, "adoptable_pool": adoptable_pool}
    try:
        settings = OperatorSettings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        cluster = d.load_cluster(manifest)
        creds = d.load_credentials(
            cluster, credentials, d.CredentialFlags(url, token_id, token_secret, ca_cert, fingerprint)
        )
        policy = AdoptionPolicy.from_settings(settings.adoptable_tag, settings.adoptable_pool)
        found = d.evaluate(cluster, creds, policy, timeout=settings.proxmox_timeout_seconds)
    except (d.DiscoverError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(d.to_json(cluster, found) if output == "json" else d.to_table(found), nl=output == "json")


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


# Commands of other distributions (entry point group ``k3s_deploy.commands``): the lab
# (`k3s-deploy-lab`) adds `lab` there. The operator itself carries none of it.
COMMANDS_GROUP = "k3s_deploy.commands"
LAB_MISSING = (
    "`k3s-deploy lab` comes with the k3s-deploy-lab distribution, which is not installed: "
    "in a checkout, `./dev setup` installs it (editable); elsewhere `pip install ./lab` from the repository."
)


def _add_plugin_commands() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=COMMANDS_GROUP):
        try:
            command = entry.load()
        except ImportError as exc:  # a half-installed extra must not take `k3s-deploy run` down
            print(f"k3s-deploy: command {entry.name!r} unavailable: {exc}", file=sys.stderr)
            continue
        main.add_command(command, entry.name)
    if "lab" not in main.commands:

        @main.command("lab", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        def lab_missing() -> None:
            """The local lab (needs the k3s-deploy-lab distribution)."""
            raise click.UsageError(LAB_MISSING)


_add_plugin_commands()
