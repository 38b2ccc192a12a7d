"""The one exception the simulator raises to answer like PVE: status code, message, per-parameter errors."""

from __future__ import annotations


class ApiError(Exception):
    """An error response: the HTTP reason is the message's first line, the body carries the whole text."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def param_error(errors: dict[str, str]) -> ApiError:
    """PVE's 400 for parameter problems: one message per parameter, each ending in a newline."""
    return ApiError(
        400, "Parameter verification failed.", {k: v.rstrip("\n") + "\n" for k, v in errors.items()}
    )


def not_found_config(node: str, vmid: int) -> ApiError:
    return ApiError(500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")


class TaskFailed(Exception):
    """Raised inside a simulated worker: the task ends with this text as its exit status."""
