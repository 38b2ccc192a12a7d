"""logs.py: object keys on every kopf record, JSON on request, and no secret value in any line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Literal

import kopf
import pytest

from k3s_deploy import logs, secrets_mask
from unit.test_secrets_mask import K3S_TOKEN, PVE_SECRET, fresh_registry

__all__ = ["fresh_registry"]  # autouse: every test starts with an empty registry


def _logger(stream: io.StringIO, fmt: Literal["text", "json"]) -> logging.Handler:
    return logs.configure_logging("DEBUG", fmt, stream=stream)


def _kopf_object_logger() -> kopf.ObjectLogger:
    body = kopf.Body(
        {
            "apiVersion": "k3sdeploy.io/v1alpha1",
            "kind": "K3sCluster",
            "metadata": {"namespace": "team-a", "name": "edge", "uid": "u-1"},
        }
    )
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # no event queue in a unit test; the record path is the same
    return kopf.ObjectLogger(body=body, settings=settings)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    objects = logging.getLogger("kopf.objects")
    filters = list(objects.filters)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    objects.filters[:] = filters


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_object_keys_and_no_secret() -> None:
    stream = io.StringIO()
    _logger(stream, "json")
    secrets_mask.register_secret(PVE_SECRET)
    _kopf_object_logger().info("connecting with token %s", PVE_SECRET)
    logging.getLogger("k3s_deploy.adapters").warning("plain record")
    try:
        raise ValueError(f"refused: PVEAPIToken=root@pam!x={PVE_SECRET}")
    except ValueError:
        logging.getLogger("k3s_deploy.adapters").exception("call failed")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    first = lines[0]
    assert first["kind"] == "K3sCluster" and first["namespace"] == "team-a" and first["name"] == "edge"
    assert first["level"] == "INFO" and first["logger"] == "kopf.objects"
    assert first["message"] == f"connecting with token {secrets_mask.MASK}"
    assert "kind" not in lines[1]
    assert "ValueError" in lines[2]["exception"]
    assert PVE_SECRET not in stream.getvalue()


@pytest.mark.usefixtures("restore_root")
def test_text_lines_carry_object_keys() -> None:
    stream = io.StringIO()
    _logger(stream, "text")
    _logger(stream, "text")  # reconfiguring replaces, never duplicates
    _kopf_object_logger().info("VM 101 started")
    out = stream.getvalue().splitlines()
    assert len(out) == 1
    assert "INFO    kopf.objects [K3sCluster team-a/edge] VM 101 started" in out[0]


@pytest.mark.usefixtures("restore_root")
def test_records_reaching_kopf_event_poster_are_already_redacted() -> None:
    """kopf posts kopf.objects records as Events through its own handler: it must see masked text."""
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    _logger(io.StringIO(), "text")
    capture = Capture()
    logging.getLogger("kopf.objects").addHandler(capture)
    try:
        _kopf_object_logger().info("installing with %s", K3S_TOKEN)
    finally:
        logging.getLogger("kopf.objects").removeHandler(capture)
    assert seen == [f"installing with K10{secrets_mask.MASK}"]


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize("root_level", ["INFO", "DEBUG"])
async def test_routine_kopf_outcomes_stay_out_of_errors_and_events(root_level: str) -> None:
    """A deliberate wait is not an error (no Warning Event); a wake handler's success is debug noise."""
    seen: list[tuple[str, str]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.levelname, record.getMessage()))

    _logger(io.StringIO(), "text")
    logging.getLogger().setLevel(root_level)
    capture = Capture()
    logging.getLogger("kopf.objects").addHandler(capture)
    logger = _kopf_object_logger()

    async def finalizer() -> None:
        raise kopf.TemporaryError(logs.deliberate_wait("waiting for the destroy task of VM 101"), delay=2)

    try:
        try:
            await finalizer()  # kopf awaits the handler and logs its outcome in the same task
        except kopf.TemporaryError as exc:
            logger.error(f"Handler 'proxmoxvm-finalize' failed temporarily: {exc}")
        logger.error("Handler 'proxmoxvm-finalize' failed temporarily: Proxmox at pve1 is unreachable")
        logger.info("Handler 'wake' succeeded.")
        logger.info("VM 101 started")
    finally:
        logging.getLogger("kopf.objects").removeHandler(capture)
    expected = [
        ("INFO", "Handler 'proxmoxvm-finalize' failed temporarily: waiting for the destroy task of VM 101"),
        ("ERROR", "Handler 'proxmoxvm-finalize' failed temporarily: Proxmox at pve1 is unreachable"),
        ("DEBUG", "Handler 'wake' succeeded."),
        ("INFO", "VM 101 started"),
    ]
    assert seen == [e for e in expected if root_level == "DEBUG" or e[0] != "DEBUG"]
