"""Private registries and mirrors (``spec.k3s.registries``): K3s's ``registries.yaml`` as a spec, with
credentials and TLS material taken from Secrets so the spec itself never holds a secret."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from k3s_deploy.api.common import ApiModel, GuestText, HttpUrl, Pattern, SecretRef

RegistryHost = Annotated[
    str,
    Pattern(
        r"\*|[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*(:[0-9]{1,5})?",
        253,
        "is not a registry host: a name or address with an optional :port (docker.io, "
        "registry.example.internal:5000), or * for every registry",
    ),
]


class RegistryRewrite(ApiModel):
    """One image-name rewrite: K3s applies ``pattern`` (a regular expression) and pulls ``replacement``."""

    pattern: GuestText = Field(description="Regular expression on the image name, e.g. ^rancher/(.*).")
    replacement: GuestText = Field(description="What to pull instead, e.g. mirror/rancher-images/$1.")


class RegistryMirror(ApiModel):
    """Where images of one registry are pulled from (``mirrors.<registry>`` in registries.yaml)."""

    registry: RegistryHost = Field(description="The registry images name, e.g. docker.io, or * for all.")
    endpoints: list[HttpUrl] = Field(
        default_factory=list,
        max_length=16,
        description="Mirror URLs tried in order (the registry itself is tried last, as K3s does).",
    )
    rewrites: list[RegistryRewrite] = Field(
        default_factory=list, max_length=16, description="Image-name rewrites applied for this registry."
    )


class RegistryConfig(ApiModel):
    """How to talk to one registry host (``configs.<host>`` in registries.yaml)."""

    host: RegistryHost = Field(description="Registry or mirror host (with :port when not 443).")
    auth_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with the credentials: keys username and password (a kubernetes.io/basic-auth "
            "Secret), or key token. Written only into registries.yaml (mode 0600) on the nodes."
        ),
    )
    tls_secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with TLS material: ca.crt (the registry's CA), and tls.crt with tls.key for a client "
            "certificate (a kubernetes.io/tls Secret). Written to files beside registries.yaml, mode 0600."
        ),
    )
    insecure_skip_verify: bool = Field(
        default=False,
        description="Do not verify the registry's certificate (off by default; set only for a lab registry).",
    )


class Registries(ApiModel):
    """Mirrors and per-host settings, rendered to /etc/rancher/k3s/registries.yaml on every node (mode
    0600, never logged). A change rolls out with a K3s restart, one node at a time."""

    mirrors: list[RegistryMirror] = Field(
        default_factory=list,
        max_length=32,
        description="Mirrors per registry.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["registry"]},
    )
    configs: list[RegistryConfig] = Field(
        default_factory=list,
        max_length=32,
        description="Credentials and TLS settings per registry host.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["host"]},
    )

    @model_validator(mode="after")
    def _unique(self) -> Self:
        # The apiserver refuses duplicates through the list-map keys; the operator checks the same.
        if len({m.registry for m in self.mirrors}) != len(self.mirrors):
            raise ValueError("registries.mirrors lists a registry twice")
        if len({c.host for c in self.configs}) != len(self.configs):
            raise ValueError("registries.configs lists a host twice")
        return self
