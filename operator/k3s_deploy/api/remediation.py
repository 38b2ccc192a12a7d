"""Remediation of NotReady nodes (off unless spec.remediation is set): reboot, then replace.

``maxUnhealthy`` is an int-or-string as in Cluster API's MachineHealthCheck: a count or a percentage
of the cluster's nodes (rounded down); with more unhealthy nodes than that nothing is done, since a
wide outage (network, Proxmox host) is not fixed by rebooting machines.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from k3s_deploy.api.common import ApiModel, StatusModel

_PERCENT = re.compile(r"[0-9]{1,3}%")
_MESSAGE = "must be a count (0, 1, 2, ...) or a percentage of the nodes such as 40%"


class _IntOrPercent:
    """A non-negative int or ``N%`` (x-kubernetes-int-or-string, checked by CEL and pydantic)."""

    @staticmethod
    def check(value: int | str) -> int | str:
        if isinstance(value, bool):
            raise ValueError(_MESSAGE)
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{value}: {_MESSAGE}")
            return value
        if not _PERCENT.fullmatch(value) or int(value[:-1]) > 100:
            raise ValueError(f"{value!r}: {_MESSAGE}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        inner = core_schema.union_schema([core_schema.int_schema(strict=True), core_schema.str_schema()])
        return core_schema.no_info_after_validator_function(self.check, inner)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? self >= 0 : self.matches('^[0-9]{1,2}%$|^100%$')",
                    "message": _MESSAGE,
                }
            ],
        }


IntOrPercent = Annotated[int | str, _IntOrPercent()]


def scaled(value: int | str, total: int) -> int:
    """How many nodes ``value`` allows out of ``total`` (a percentage rounded down, as Cluster API)."""
    if isinstance(value, int):
        return value
    return math.floor(total * int(value[:-1]) / 100)


class RemediationPolicy(ApiModel):
    """Reboot a node NotReady for longer than the timeout through Proxmox; if it is still NotReady one
    timeout after the reboot, replace its VM (delete the ProxmoxVM, a new one is cloned and joins)."""

    node_not_ready_timeout_seconds: int = Field(
        default=300,
        ge=30,
        le=86400,
        description="How long a node may be NotReady before its VM is rebooted, and again after the "
        "reboot before the VM is replaced.",
    )
    max_unhealthy: IntOrPercent = Field(
        default="100%",
        description="Most nodes that may be unhealthy at once for remediation to act (a count or a "
        "percentage of the nodes, rounded down, as MachineHealthCheck); with more, nothing is done and "
        "the Remediation condition says why.",
    )


RemediationAction = Literal["Reboot", "Replace"]


class RemediationRecord(StatusModel):
    """One remediation action taken on a node."""

    node: str = Field(description="Node (and ProxmoxVM) name.")
    action: str = Field(description="Reboot (through Proxmox) or Replace (VM deleted, cloned again).")
    time: str = Field(description="When it was taken (RFC 3339).")
