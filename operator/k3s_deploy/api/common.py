"""Building blocks shared by both resources: the model base, cross-field rules, references, conditions
(the constrained strings are in :mod:`k3s_deploy.api.formats`).

Every rule is declared once and serves twice: as a CEL ``x-kubernetes-validations`` entry the apiserver
enforces (so a bad object is refused at ``kubectl apply`` with the same message), and as a pydantic
check when the operator parses an object (unit tests, objects from older CRD versions). Constrained
strings carry a friendly message instead of a raw regex dump.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from k3s_deploy.api.formats import (
    CONTROL_CHAR,
    CONTROL_CHARS,
    NO_CONTROL_CHARS_MESSAGE,
    DiskKey,
    DnsName,
    GuestText,
    HostOrIP,
    HttpUrl,
    IPv4,
    IPv4Cidr,
    IPv4Format,
    K3sChannel,
    K3sVersion,
    K8sName,
    LinuxUser,
    Pattern,
    PveNodeName,
    PveTag,
    SecretKey,
    Sha256Fingerprint,
    SshPublicKey,
    StorageId,
    TlsFingerprint,
    VmLocation,
    VmName,
    cel_string,
)

GROUP = "k3sdeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def camel(name: str) -> str:
    """snake_case -> camelCase, leaving digits alone (``k3s_version`` -> ``k3sVersion``)."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the apiserver, a Python predicate for the operator, one message."""

    cel: str
    message: str
    # None: a transition rule (CEL on ``oldSelf``); only the apiserver sees the old object.
    check: Callable[[Any], bool] | None
    field_path: str | None = None

    def as_validation(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class ApiModel(BaseModel):
    """Base of spec models: snake_case in Python, camelCase in YAML, unknown fields refused."""

    model_config = ConfigDict(alias_generator=camel, populate_by_name=True, extra="forbid")
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [r.as_validation() for r in cls.rules]
        return schema

    def to_k8s(self) -> dict[str, Any]:
        """The object as the Kubernetes API stores it: camelCase keys, no null fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """Base of status models: fields we do not know (written by another version) are ignored."""

    model_config = ConfigDict(alias_generator=camel, populate_by_name=True, extra="ignore")


Vmid = Annotated[int, Field(ge=100, le=999_999_999)]

PowerState = Literal["Running", "Stopped"]
DeletionPolicy = Literal["Delete", "Stop", "Retain"]
ConditionStatus = Literal["True", "False", "Unknown"]


# --- references ----------------------------------------------------------------------------------------


class SecretRef(ApiModel):
    """A Secret in the same namespace as the object that refers to it."""

    name: K8sName = Field(description="Name of the Secret (same namespace).")


class SecretKeyRef(ApiModel):
    """One key of a Secret in the same namespace."""

    name: K8sName = Field(description="Name of the Secret (same namespace).")
    key: SecretKey = Field(description="Key inside the Secret's data.")


class ProxmoxAccess(ApiModel):
    """How to reach and trust the Proxmox VE API (shared by both kinds)."""

    credentials_ref: SecretRef = Field(
        description=(
            "Secret with the Proxmox API credentials. Keys: `url` (https://host:8006), then either "
            "`tokenId` (user@realm!name) and `tokenSecret`, or `username` (user@realm) and `password`; "
            "optional `caCert` (PEM bundle that signs the Proxmox certificate). TLS is verified by default."
        )
    )
    insecure_skip_tls_verify: bool = Field(
        default=False,
        alias="insecureSkipTLSVerify",
        description=(
            "Do not verify the Proxmox TLS certificate at all. Unsafe; prefer `caCert` in the Secret or "
            "`fingerprint` pinning."
        ),
    )
    fingerprint: TlsFingerprint | None = Field(
        default=None,
        description=(
            "Pin the Proxmox certificate by its SHA-256 fingerprint (AA:BB:...); the connection is "
            "trusted only when the presented certificate matches, whoever signed it."
        ),
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(self.insecureSkipTLSVerify && has(self.fingerprint))",
            "insecureSkipTLSVerify and fingerprint contradict each other: fingerprint pinning already "
            "trusts a self-signed certificate, so remove insecureSkipTLSVerify",
            lambda m: not (m.insecure_skip_tls_verify and m.fingerprint is not None),
        ),
    )


# --- status building blocks -------------------------------------------------------------------------


class Condition(StatusModel):
    """One observation of the object's state (the metav1.Condition shape, kstatus-compatible)."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready, Reconciling, Stalled.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        default="",
        max_length=1024,
        description="CamelCase reason for the last transition, for machines (e.g. TemplateNotFound).",
    )
    message: str = Field(default="", max_length=32768, description="What happened and what to do about it.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When status last changed (not reason or message)."
    )


def conditions_field() -> Any:
    """The ``status.conditions`` field, as a list map keyed by ``type``."""
    return Field(
        default_factory=list,
        max_length=32,
        description=(
            "Current conditions: Ready summarises; Reconciling (only while True) while work is in flight; "
            "Stalled (only while True) on an error that needs a change to the spec or the world."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of ``type_`` in ``conditions``, if present."""
    return next((c for c in conditions if c.type == type_), None)


# the formats are re-exported: both resources import their building blocks from here
__all__ = [
    "API_VERSION",
    "CONTROL_CHAR",
    "CONTROL_CHARS",
    "GROUP",
    "NO_CONTROL_CHARS_MESSAGE",
    "VERSION",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "DeletionPolicy",
    "DiskKey",
    "DnsName",
    "GuestText",
    "HostOrIP",
    "HttpUrl",
    "IPv4",
    "IPv4Cidr",
    "IPv4Format",
    "K3sChannel",
    "K3sVersion",
    "K8sName",
    "LinuxUser",
    "Pattern",
    "PowerState",
    "ProxmoxAccess",
    "PveNodeName",
    "PveTag",
    "Rule",
    "SecretKey",
    "SecretKeyRef",
    "SecretRef",
    "Sha256Fingerprint",
    "SshPublicKey",
    "StatusModel",
    "StorageId",
    "TlsFingerprint",
    "VmLocation",
    "VmName",
    "Vmid",
    "camel",
    "cel_string",
    "condition",
    "conditions_field",
]
