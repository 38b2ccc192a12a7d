"""Keep the state in a JSON file: written atomically, shortly after each change, and at shutdown."""

from __future__ import annotations

import json
import os
from pathlib import Path

from k3s_deploy_lab.pvesim.model import State


def load(path: Path) -> State | None:
    if not path.exists():
        return None
    return State.from_json(json.loads(path.read_text()))


def save(state: State, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the lab's secrets
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state.to_json(), separators=(",", ":")))
    os.replace(tmp, path)
