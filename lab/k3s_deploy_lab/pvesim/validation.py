"""Schema-driven parameter checks with PVE's 400 wording; returns the values coerced to their types."""

from __future__ import annotations

import re
from typing import Any

from k3s_deploy_lab.pvesim.apierror import param_error
from k3s_deploy_lab.pvesim.formats import check_format
from k3s_deploy_lab.pvesim.schema import Endpoint

_INT = re.compile(r"^[+-]?\d+$")
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
UNDEFINED = "property is not defined in schema and the schema does not allow additional properties"


def _pattern(perl: str) -> re.Pattern[str]:
    return re.compile(perl.replace("(?^:", "(?:"))


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def check_value(schema: dict[str, Any], value: Any) -> tuple[Any, str | None]:
    """Check one value against its property schema; returns (coerced value, error or None)."""
    kind = schema.get("type", "string")
    if isinstance(value, list) and kind != "array":
        return value, f"type check ('{kind}') failed - got ARRAY"
    if kind == "array":
        items = value if isinstance(value, list) else [value]
        return [_scalar_text(v) for v in items], None
    if kind == "boolean":
        if value is True or value is False:
            return value, None
        text = _scalar_text(value)
        if text in ("1", "0"):
            return text == "1", None
        return value, f"type check ('boolean') failed - got '{text}'"
    text = _scalar_text(value)
    coerced: Any = text
    if kind == "integer":
        if not _INT.match(text):
            return value, f"type check ('integer') failed - got '{text}'"
        coerced = int(text)
    elif kind == "number":
        if not _NUM.match(text):
            return value, f"type check ('number') failed - got '{text}'"
        coerced = float(text)
    if kind in ("integer", "number"):
        if "minimum" in schema and coerced < float(schema["minimum"]):
            return value, f"value must have a minimum value of {schema['minimum']}"
        if "maximum" in schema and coerced > float(schema["maximum"]):
            return value, f"value must have a maximum value of {schema['maximum']}"
    if kind == "string":
        if "maxLength" in schema and len(text) > int(schema["maxLength"]):
            return value, f"value may only be {schema['maxLength']} characters long"
        if "minLength" in schema and len(text) < int(schema["minLength"]):
            return value, f"value must be at least {schema['minLength']} characters long"
        if "enum" in schema and text not in schema["enum"]:
            return (
                value,
                f"value '{text}' does not have a value in the enumeration '{', '.join(schema['enum'])}'",
            )
        if "pattern" in schema and not _pattern(schema["pattern"]).fullmatch(text):
            return value, "value does not match the regex pattern"
    if "format" in schema:
        problem = check_format(schema["format"], text)
        if problem:
            return value, f"invalid format - {problem}"
    return coerced, None


def validate(ep: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
    """Validate request parameters (path ones included) against ``ep``; raise PVE's 400 on problems."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, value in params.items():
        schema = ep.prop(name)
        if schema is None:
            errors[name] = UNDEFINED
            continue
        coerced, problem = check_value(schema, value)
        if problem:
            errors[name] = problem
        else:
            out[name] = coerced
    for name, schema in ep.properties.items():
        if name.endswith("[n]"):
            continue
        if not schema.get("optional") and name not in params:
            errors.setdefault(name, "property is missing and it is not optional")
        requires = schema.get("requires")
        if name in params and isinstance(requires, str) and requires not in params:
            errors.setdefault(requires, f"missing property - '{name}' requires this property")
    if errors:
        raise param_error(errors)
    return out
