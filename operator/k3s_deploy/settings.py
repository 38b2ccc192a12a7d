"""Typed operator settings, read from the environment (prefix ``K3SD_``) and overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from k3s_deploy.netpolicy import AllowList

DEFAULT_ADOPTABLE_TAG = "k3sdeploy-adoptable"
_PVE_TAG = r"^$|^[a-z0-9_][a-z0-9_\-+.]*$"  # a Proxmox tag (lower case), or empty for none


class OperatorSettings(BaseSettings):
    """Everything an operator deployment can tune; defaults are safe for production."""

    model_config = SettingsConfigDict(env_prefix="K3SD_", extra="forbid")

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means cluster-wide."
    )
    standalone: bool = Field(default=True, description="Run without kopf peering (set False for HA).")
    peering_name: str = Field(
        default="k3s-deploy", description="kopf peering object name when not standalone."
    )
    peering_priority: int | None = Field(
        default=None, description="kopf peering priority; unset picks a random one per replica."
    )
    peering_lifetime_seconds: int = Field(
        default=30, ge=5, description="How long a silent peer counts as alive (bounds HA handover)."
    )
    liveness_endpoint: str | None = Field(
        default=None, description="kopf liveness endpoint such as http://0.0.0.0:8080/healthz."
    )
    metrics_port: int | None = Field(default=None, description="Prometheus metrics port; None disables.")
    metrics_address: str = Field(
        default="127.0.0.1", description="Address the metrics port binds; 0.0.0.0 in a pod to be scraped."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    resync_seconds: float = Field(default=60.0, gt=0, description="Periodic drift check interval.")
    channel_check_seconds: float = Field(
        default=600.0, gt=0, description="How long a K3s release channel's answer is reused (version check)."
    )
    proxmox_concurrency: int = Field(
        default=8,
        ge=1,
        description="Parallel Proxmox API calls per credential (guest-agent reads, which wait for "
        "booting guests, have a second pool of this size).",
    )
    proxmox_timeout_seconds: float = Field(
        default=30.0, gt=0, description="HTTP timeout of one Proxmox call."
    )
    ssh_max_output_bytes: int = Field(
        default=1 << 20,
        ge=64 * 1024,
        description="Most bytes read from one output stream of one guest command (kubeconfig, probes, "
        "installer output); a guest sending more gets its cluster stalled with GuestOutputTooLarge.",
    )
    kube_concurrency: int = Field(default=8, ge=1, description="Parallel Kubernetes API calls.")
    watch_server_timeout: int = Field(default=300, ge=10, description="Server-side watch timeout (s).")
    watch_client_timeout: int = Field(default=330, ge=10, description="Client-side watch timeout (s).")
    adoptable_tag: str = Field(
        default=DEFAULT_ADOPTABLE_TAG,
        pattern=_PVE_TAG,
        description="Proxmox tag an admin sets on a VM to allow its adoption (and the destruction of an "
        "adopted VM under deletionPolicy Delete); empty: no tag counts.",
    )
    adoptable_pool: str | None = Field(
        default=None,
        description="Proxmox pool whose VMs may be adopted, as if they carried the adoptable tag.",
    )
    fetch_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Where the operator may connect on a tenant's behalf (comma-separated): host names, *.domain "
            "or * for air-gap downloads (fetchFrom: Operator is off while this is empty), and IP "
            "addresses or CIDR networks that downloads and channel servers may reach although they "
            "are loopback or private."
        ),
    )
    fetch_dir: Path | None = Field(
        default=None,
        description="Directory for air-gap downloads (a volume sized for them); default a temp dir.",
    )
    fetch_budget_bytes: int = Field(
        default=1536 << 20,
        ge=64 << 20,
        description="Most bytes the downloads in flight and cached may take in fetch_dir; keep it under the volume's size.",
    )
    fetch_ca_file: Path | None = Field(
        default=None,
        description="Extra CA certificates (PEM) trusted for air-gap downloads, besides the system ones.",
    )

    @field_validator("fetch_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            entries = [str(v).strip() for v in value if str(v).strip()]
            AllowList.parse(entries)  # a bad entry stops the operator at start, with its message
            return entries
        return value

    @property
    def fetch_allow_list(self) -> AllowList:
        return AllowList.parse(self.fetch_allowed_hosts)
