"""Building blocks shared by both resources: the model base, cross-field rules, constrained strings.

Every rule is declared once and serves twice: as a CEL ``x-kubernetes-validations`` entry the apiserver
enforces (so a bad object is refused at ``kubectl apply`` with the same message), and as a pydantic
check when the operator parses an object (unit tests, objects from older CRD versions). Constrained
strings carry a friendly message instead of a raw regex dump.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

GROUP = "k3sdeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def camel(name: str) -> str:
    """snake_case -> camelCase, leaving digits alone (``k3s_version`` -> ``k3sVersion``)."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def cel_string(text: str) -> str:
    """A CEL string literal for ``text`` (JSON escaping is valid CEL for the ASCII we use)."""
    return json.dumps(text)


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the apiserver, a Python predicate for the operator, one message."""

    cel: str
    message: str
    check: Callable[[Any], bool]
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
            if not rule.check(self):
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


@dataclass(frozen=True)
class Pattern:
    """A string constraint with a readable message, enforced by pydantic and by a CEL rule."""

    regex: str
    max_length: int
    message: str

    def check(self, value: str) -> str:
        if len(value) > self.max_length:
            raise ValueError(f"{value!r} is longer than {self.max_length} characters")
        if not re.fullmatch(self.regex, value):
            raise ValueError(f"{value!r}: {self.message}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        rule = f"self.matches({cel_string('^(?:' + self.regex + ')$')})"
        return {
            "type": "string",
            "minLength": 1,
            "maxLength": self.max_length,
            "x-kubernetes-validations": [
                {
                    "rule": rule,
                    "message": self.message,
                    "messageExpression": f'"\'" + self + "\': " + {cel_string(self.message)}',
                }
            ],
        }


@dataclass(frozen=True)
class IPv4Format:
    """An IPv4 address, or with ``cidr=True`` an IPv4 address/prefix (host bits allowed)."""

    cidr: bool = False

    def check(self, value: str) -> str:
        try:
            if self.cidr:
                if "/" not in value:
                    raise ValueError
                ipaddress.IPv4Interface(value)
            else:
                ipaddress.IPv4Address(value)
        except ValueError:
            kind = "an IPv4 CIDR like 192.168.1.10/24" if self.cidr else "an IPv4 address like 192.168.1.10"
            raise ValueError(f"{value!r} is not {kind}") from None
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        if self.cidr:
            # format cidr also accepts IPv6; the pattern keeps it to IPv4 with a prefix length.
            return {
                "type": "string",
                "format": "cidr",
                "maxLength": 18,
                "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$",
            }
        return {"type": "string", "format": "ipv4", "maxLength": 15}


# --- constrained strings -----------------------------------------------------------------------------

K8sName = Annotated[
    str,
    Pattern(
        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
        253,
        "must be a Kubernetes object name: lower-case letters, digits, '-' and '.', "
        "starting and ending with a letter or digit",
    ),
]
SecretKey = Annotated[
    str,
    Pattern(r"[-._a-zA-Z0-9]+", 253, "must be a Secret key: letters, digits, '-', '_' and '.'"),
]
K3sVersion = Annotated[
    str,
    Pattern(
        r"v1\.[0-9]+\.[0-9]+(-rc[0-9]+)?\+k3s[0-9]+",
        64,
        "is not a K3s release; use a tag from github.com/k3s-io/k3s/releases such as v1.31.4+k3s1",
    ),
]
K3sChannel = Annotated[
    str,
    Pattern(
        r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?",
        64,
        "is not a K3s release channel; use stable, latest, testing or a minor line such as v1.31",
    ),
]
PveTag = Annotated[
    str,
    Pattern(
        r"[a-z0-9_][a-z0-9_+.-]*",
        64,
        "is not a valid Proxmox tag: use lower-case letters, digits and _ - + . "
        "(Proxmox stores tags lower-cased), not starting with - + or .",
    ),
]
PveNodeName = Annotated[
    str,
    Pattern(
        r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?",
        63,
        "is not a Proxmox node name: letters, digits and '-', as shown under Datacenter in the UI",
    ),
]
VmName = Annotated[
    str,
    Pattern(
        r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*",
        63,
        "is not a valid Proxmox VM name: it must be a DNS name (letters, digits, '-' and '.')",
    ),
]
VmLocation = Annotated[
    str,
    Pattern(
        r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?/[1-9][0-9]{2,8}",
        73,
        "is not a VM location; write <proxmox-node>/<vmid>, for example pve1/105",
    ),
]
DnsName = Annotated[
    str,
    Pattern(
        r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*",
        253,
        "is not a DNS name (letters, digits, '-' and '.', like example.internal)",
    ),
]
HostOrIP = Annotated[
    str,
    Pattern(
        r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*",
        253,
        "is not a host name or IPv4 address (like k3s.example.internal or 192.168.1.50)",
    ),
]
# C0 control characters and DEL (newline, carriage return, tab, NUL, escape, ...). A string that ends
# up in a command line or a file on a guest must not carry them: a newline starts a new line of an env
# or config file, and in a log it forges a line. Tab is refused as well: no K3s flag, URL or name
# needs one, and one rule for every such string is easier to state than exceptions.
CONTROL_CHARS = r"\x00-\x1f\x7f"
CONTROL_CHAR = re.compile(f"[{CONTROL_CHARS}]")
NO_CONTROL_CHARS_MESSAGE = "must not contain control characters (newline, carriage return, tab, NUL, ...)"
GuestText = Annotated[
    str,
    Pattern(
        rf"[^{CONTROL_CHARS}]+",
        1024,
        NO_CONTROL_CHARS_MESSAGE + ": it is written into a command line on the nodes",
    ),
]
HttpUrl = Annotated[
    str,
    Pattern(
        rf"https?://[^\s/?#{CONTROL_CHARS}]+([/?#][^\s{CONTROL_CHARS}]*)?",
        2048,
        "is not an http(s) URL such as https://get.k3s.io (no spaces or control characters)",
    ),
]
StorageId = Annotated[
    str,
    Pattern(
        r"[a-zA-Z][-a-zA-Z0-9_.]*[a-zA-Z0-9]",
        64,
        "is not a Proxmox storage or pool id (letters, digits, '-', '_' and '.', like local-lvm)",
    ),
]
DiskKey = Annotated[
    str,
    Pattern(
        r"(scsi|virtio|sata|ide)[0-9]{1,2}",
        9,
        "is not a Proxmox disk key; use scsiN, virtioN, sataN or ideN such as scsi0",
    ),
]
LinuxUser = Annotated[
    str,
    Pattern(r"[a-z_][a-z0-9_-]*", 32, "is not a Linux user name (lower-case letters, digits, '_' and '-')"),
]
SshPublicKey = Annotated[
    str,
    Pattern(
        r"(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
        rf" [A-Za-z0-9+/]+={{0,3}}( [^{CONTROL_CHARS}]*)?",
        8192,
        "is not an OpenSSH public key line such as 'ssh-ed25519 AAAAC3Nz... user@host'",
    ),
]
Sha256Fingerprint = Annotated[
    str,
    Pattern(
        r"SHA256:[A-Za-z0-9+/]{43}=?",
        51,
        "is not an OpenSSH SHA256 fingerprint as printed by ssh-keygen -lf (SHA256:...)",
    ),
]
TlsFingerprint = Annotated[
    str,
    Pattern(
        r"([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}",
        95,
        "is not a SHA-256 certificate fingerprint; write 32 hex byte pairs separated by ':' "
        "(as shown under Node > Certificates in Proxmox)",
    ),
]
IPv4 = Annotated[str, IPv4Format()]
IPv4Cidr = Annotated[str, IPv4Format(cidr=True)]
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
