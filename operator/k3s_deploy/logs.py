"""Structured logging with secret redaction.

Two promises: every record about a Kubernetes object carries its ``kind``, ``namespace`` and ``name``
(kopf attaches them as ``record.k8s_ref``; we print them as fields, in text or JSON), and no secret value
reaches a log line or a kopf-posted Event. kopf turns object-logger records into Events through a
handler on the ``kopf.objects`` logger, so the redaction filter sits on that logger (records are
scrubbed before any handler sees them) as well as on our root handler (for everything else).

What is masked, and how, is :mod:`k3s_deploy.secrets_mask` (the one masking module); this module
applies it to every record.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import IO, Any, Literal

from k3s_deploy.secrets_mask import redact


class RedactingFilter(logging.Filter):
    """Rewrite a record's message and traceback with :func:`redact`; never drops a record."""

    _exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw template, still redacted
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(record.exc_text or self._exc_formatter.formatException(record.exc_info))
            record.exc_info = None  # formatters would re-render the raw traceback from exc_info
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_WAIT: ContextVar[str | None] = ContextVar("k3sd_deliberate_wait", default=None)


def deliberate_wait(message: str) -> str:
    """Mark ``message`` as a wait, not a failure, for the kopf retry the handler is about to raise.

    kopf logs every ``TemporaryError`` at ERROR ("failed temporarily"), above the Event posting level,
    so a deletion waiting for a Proxmox task would look like a failure. kopf logs the outcome in the
    task that ran the handler, so the mark is still there when the record is filtered.
    """
    _WAIT.set(message)
    return message


class KopfRoutineFilter(logging.Filter):
    """Keep kopf's routine handler outcomes out of the log and out of Events.

    Every watch event runs our wake handlers and kopf logs each "Handler 'x' succeeded." at INFO: at
    100 objects that is most of the log. Those are kept at DEBUG only. A deliberate wait (see
    :func:`deliberate_wait`) is logged at INFO instead of ERROR, below the Event posting level.
    Real failures are left as kopf reports them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith("Handler "):
            if record.getMessage().endswith(" succeeded."):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().isEnabledFor(logging.DEBUG)
        elif record.levelno == logging.ERROR and " failed temporarily: " in str(record.msg):
            wait = _WAIT.get()
            if wait is not None and record.getMessage().endswith(f" failed temporarily: {wait}"):
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def object_fields(record: logging.LogRecord) -> dict[str, str]:
    """kind/namespace/name of the object a kopf record is about (empty for other records)."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict):
        return {}
    return {key: str(ref[key]) for key in ("kind", "namespace", "name") if ref.get(key)}


class TextFormatter(logging.Formatter):
    """``time level logger [Kind namespace/name] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(k3sd_object)s%(message)s")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        obj = object_fields(record)
        where = "/".join(v for v in (obj.get("namespace"), obj.get("name")) if v)
        record.k3sd_object = f"[{obj.get('kind', '?')} {where}] " if obj else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the object keys, and the traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(object_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


class _OperatorHandler(logging.StreamHandler[IO[str]]):
    """Marks the handler we install, so reconfiguring replaces it instead of stacking another."""


def configure_logging(
    level: str = "INFO", fmt: Literal["text", "json"] = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Install the operator's root handler (text or JSON) with redaction; safe to call repeatedly."""
    handler = _OperatorHandler(stream if stream is not None else sys.stderr)
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OperatorHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # kopf posts records of this logger as Kubernetes Events: scrub them before any handler runs.
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, KopfRoutineFilter) for f in objects.filters):
        objects.addFilter(KopfRoutineFilter())
    if not any(isinstance(f, RedactingFilter) for f in objects.filters):
        objects.addFilter(RedactingFilter())
    return handler
