"""Constrained strings shared by both resources, each with a readable message, enforced twice: by
pydantic when the operator parses an object, and by a CEL rule the apiserver runs at ``kubectl apply``."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema


def cel_string(text: str) -> str:
    """A CEL string literal for ``text`` (JSON escaping is valid CEL for the ASCII we use)."""
    return json.dumps(text)


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
