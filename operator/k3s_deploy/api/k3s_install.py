"""How K3s gets onto the nodes: version or channel, installer arguments, and where the installer
comes from (the public script, a mirror, or air-gapped artefacts)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from k3s_deploy.api.common import (
    ApiModel,
    GuestText,
    HostOrIP,
    HttpUrl,
    K3sChannel,
    K3sVersion,
    Pattern,
    Rule,
    SecretKeyRef,
)
from k3s_deploy.api.registries import Registries

FetchFrom = Literal["Operator", "Node"]

# K3s server flags fixed when the cluster is created: every server must agree on them ("critical
# configuration"), the pod and service networks, the DNS address, the CNI backend and the datastore live
# on in the cluster's objects and routes, so a changed value is never applied in place.
FIXED_AT_CREATION = (
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
    "cluster-domain",
    "flannel-backend",
    "datastore-endpoint",
)
# Every spelling K3s would take: one or two dashes (urfave/cli), and a trailing + (a config key that
# appends) which the operator refuses but the rule must not let through as "another flag".
_FIXED_NAME = "^--?(" + "|".join(FIXED_AT_CREATION) + ")[+]?"
_FIXED_RE = _FIXED_NAME + "="
_FIXED_NAMES = ", ".join(f"--{f}" for f in FIXED_AT_CREATION)

_ARGS_DESCRIPTION = (
    "written as keys of the node's K3s config file /etc/rancher/k3s/config.yaml.d/50-k3s-deploy.yaml "
    "(--disable=traefik becomes disable: [traefik]); a change rolls out node by node with a K3s restart. "
    f"{_FIXED_NAMES} cannot change after creation (give them as --flag=value). Do not put secrets here: "
    "the spec is readable by everyone who can read the object."
)


Arg = GuestText
Sha256Hex = Annotated[
    str, Pattern(r"[0-9a-fA-F]{64}", 64, "is not a SHA-256 checksum: 64 hex digits, as sha256sum prints")
]


def _args_field(description: str) -> Any:
    return Field(default_factory=list, max_length=64, description=description)


class ScriptInstall(ApiModel):
    """Run the K3s install script on each node (needs internet or a mirror reachable from the nodes)."""

    url: HttpUrl = Field(
        default="https://get.k3s.io", description="Where the nodes download the install script."
    )


class AirGapInstall(ApiModel):
    """Install from artefacts the user provides, for sites without internet access."""

    installer_url: HttpUrl = Field(
        alias="installerURL", description="URL of the K3s install script (install.sh) to use."
    )
    binary_url: HttpUrl = Field(
        alias="binaryURL", description="URL of the k3s binary matching the wanted version and architecture."
    )
    images_url: HttpUrl | None = Field(
        default=None,
        alias="imagesURL",
        description="Optional URL of the air-gap images tarball (k3s-airgap-images-<arch>.tar.zst).",
    )
    fetch_from: FetchFrom = Field(
        default="Operator",
        description=(
            "Operator: the operator downloads the files (https only, from hosts its admin allowed, each "
            "checked against its sha256) and copies them to each node over SSH, so nodes need no network "
            "access beyond SSH. Node: each node downloads them itself."
        ),
    )
    installer_sha256: Sha256Hex | None = Field(
        default=None,
        alias="installerSHA256",
        description="SHA-256 of the installer (hex, as sha256sum prints); required with fetchFrom: Operator.",
    )
    binary_sha256: Sha256Hex | None = Field(
        default=None,
        alias="binarySHA256",
        description="SHA-256 of the k3s binary (sha256sum-k3s-<arch>.txt of the release); required with "
        "fetchFrom: Operator.",
    )
    images_sha256: Sha256Hex | None = Field(
        default=None,
        alias="imagesSHA256",
        description="SHA-256 of the images tarball; required with fetchFrom: Operator and imagesURL.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "(has(self.fetchFrom) && self.fetchFrom == 'Node') || (has(self.installerSHA256) && "
            "has(self.binarySHA256) && (!has(self.imagesURL) || has(self.imagesSHA256)))",
            "fetchFrom: Operator needs installerSHA256, binarySHA256 and, with imagesURL, imagesSHA256: "
            "the operator downloads only artefacts whose checksum the spec names",
            lambda m: (
                m.fetch_from == "Node"
                or (
                    m.installer_sha256 is not None
                    and m.binary_sha256 is not None
                    and (m.images_url is None or m.images_sha256 is not None)
                )
            ),
        ),
        Rule(
            "(has(self.fetchFrom) && self.fetchFrom == 'Node') || (self.installerURL.startsWith('https://') "
            "&& self.binaryURL.startsWith('https://') && (!has(self.imagesURL) || "
            "self.imagesURL.startsWith('https://')))",
            "fetchFrom: Operator downloads only over https: installerURL, binaryURL and imagesURL must "
            "start with https://",
            lambda m: (
                m.fetch_from == "Node"
                or all(
                    u is None or u.startswith("https://")
                    for u in (m.installer_url, m.binary_url, m.images_url)
                )
            ),
        ),
    )


class InstallSource(ApiModel):
    """How K3s gets onto the nodes. Default: the script from https://get.k3s.io."""

    script: ScriptInstall | None = Field(default=None, description="Run the install script from a URL.")
    air_gap: AirGapInstall | None = Field(
        default=None, description="Use installer and binary the user provides."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.script) != has(self.airGap)",
            "installSource needs exactly one of script or airGap",
            lambda m: (m.script is None) != (m.air_gap is None),
        ),
    )


class K3sSettings(ApiModel):
    """What K3s to install and how."""

    version: K3sVersion | None = Field(
        default=None,
        description="Pinned K3s release, e.g. v1.31.4+k3s1. Changing it starts a rolling upgrade.",
    )
    channel: K3sChannel | None = Field(
        default=None,
        description="Release channel to follow instead of a pinned version: stable, latest, testing or v1.31.",
    )
    channel_server: HttpUrl = Field(
        default="https://update.k3s.io/v1-release/channels",
        description="Channel server that resolves channels to versions (also used for the version check).",
    )
    auto_upgrade: bool = Field(
        default=False,
        description="With a channel: roll the cluster forward when the channel moves. Otherwise only report it.",
    )
    allow_downgrade: bool = Field(
        default=False, description="Allow moving to an older version than installed (refused by default)."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "K3s server token (the password; or K3s's secure K10... form). Default: generated into the "
            "Secret <cluster>-token (key token). The operator keeps the secure form read from the first "
            "server and a separate agent token (key agentToken) in <cluster>-token."
        ),
    )
    server_args: list[Arg] = _args_field("Extra arguments for K3s servers, " + _ARGS_DESCRIPTION)
    agent_args: list[Arg] = _args_field("Extra arguments for K3s agents, " + _ARGS_DESCRIPTION)
    tls_sans: list[HostOrIP] = Field(
        default_factory=list,
        max_length=32,
        alias="tlsSANs",
        description="Extra names for the API certificate; server addresses and spec.endpoint are added already.",
    )
    install_source: InstallSource | None = Field(
        default=None, description="Install script from the internet (default) or air-gapped artefacts."
    )
    registries: Registries | None = Field(
        default=None,
        description="Private registries and mirrors: /etc/rancher/k3s/registries.yaml on every node.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.version) != has(self.channel)",
            "set exactly one of k3s.version (a pinned release such as v1.31.4+k3s1) "
            "or k3s.channel (such as stable)",
            lambda m: (m.version is None) != (m.channel is None),
        ),
        Rule(
            "!self.autoUpgrade || has(self.channel)",
            "autoUpgrade follows a channel: set k3s.channel, or change k3s.version to upgrade",
            lambda m: not m.auto_upgrade or m.channel is not None,
            field_path=".autoUpgrade",
        ),
        Rule(
            f"!has(self.serverArgs) || self.serverArgs.all(a, !a.matches('{_FIXED_NAME}$'))",
            f"give {_FIXED_NAMES} in serverArgs as one item --flag=value: they are fixed when the "
            "cluster is created and the apiserver checks that they do not change",
            lambda m: not any(re.match(_FIXED_NAME + "$", a) for a in m.server_args),
            field_path=".serverArgs",
        ),
        Rule(
            f"(has(self.serverArgs) ? self.serverArgs.filter(a, a.matches('{_FIXED_RE}')) : []) == "
            f"(has(oldSelf.serverArgs) ? oldSelf.serverArgs.filter(a, a.matches('{_FIXED_RE}')) : [])",
            f"{_FIXED_NAMES} in serverArgs cannot change after the cluster is created: K3s fixes the pod "
            "and service networks, cluster DNS, the flannel backend and the datastore at creation and "
            "refuses servers that disagree; restore the old value, or create a new cluster",
            None,
            field_path=".serverArgs",
        ),
    )
