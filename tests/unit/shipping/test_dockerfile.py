"""The image's promises, checked on the Dockerfile itself (no Docker engine runs here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from unit.shipping.dockerfile import (
    Dockerfile,
    dockerignore_excludes,
    logical_lines,
    parse,
    read_dockerignore,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(ROOT / "Dockerfile")


def test_multi_stage_and_final_stage_only_copies_from_builder(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    builder, final = dockerfile.stages[0], dockerfile.stages[-1]
    assert builder.name == "builder"
    copies_from = [i.flags().get("from") for i in final.all("COPY")]
    assert copies_from and all(src == "builder" for src in copies_from), copies_from
    # No build tools in the final stage: it runs nothing, it only receives the built virtualenv.
    assert final.all("RUN") == []
    assert final.all("ADD") == []


def test_images_are_pinned_slim_python_matching_requires_python(dockerfile: Dockerfile) -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in requires.removeprefix(">=").split("."))
    for stage in dockerfile.stages:
        image = dockerfile.resolve(stage.image)
        assert "$" not in image, f"unresolved ARG in FROM {stage.image}"
        name, _, digest = image.partition("@")
        # Pinned by digest: the tag alone moves with every upstream rebuild.
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{image} is not pinned by digest"
        repo, _, tag = name.rpartition(":")
        assert tag and "latest" not in tag, image
        # Fully qualified: podman refuses short names without a configured search registry.
        assert repo == "docker.io/library/python" and "slim" in tag, image
        version = tuple(int(x) for x in tag.split("-")[0].split(".")[:2])
        assert version >= minimum, (image, requires)


def test_builder_installs_only_the_hashed_lock(dockerfile: Dockerfile) -> None:
    """Every dependency comes from requirements/*.lock with its sha256 checked; our own wheel is built
    with the locked hatchling and installed from the local file without an index."""
    runs = " ".join(i.args for i in dockerfile.stages[0].all("RUN"))
    installs = [part.strip() for part in re.split(r"&&", runs) if " install " in part]
    assert installs
    for command in installs:
        if "-r requirements/" in command:
            assert "--require-hashes" in command and "--only-binary :all:" in command, command
        else:
            assert "--no-index" in command and "/wheels/" in command, command
    assert "-r requirements/operator.lock" in runs and "-r requirements/build.lock" in runs
    assert "--no-build-isolation" in runs


def test_final_stage_runs_non_root_and_read_only_friendly(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    users = final.all("USER")
    assert users, "final stage must set USER"
    assert users[-1].args.split(":")[0] == "65532"
    env = final.env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    # Anything that wants a home or a temp dir writes into /tmp, the pod's emptyDir.
    assert env.get("HOME") == "/tmp"
    assert env.get("TMPDIR", "/tmp") == "/tmp"


def test_entrypoint_is_the_console_script(dockerfile: Dockerfile) -> None:
    final = dockerfile.stages[-1]
    entry = final.all("ENTRYPOINT")[-1].exec_form()
    assert entry == ["k3s-deploy", "run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["k3s-deploy"] == "k3s_deploy.cli:main"


def test_build_context_holds_what_the_builder_copies() -> None:
    patterns = read_dockerignore(ROOT / ".dockerignore")
    builder = parse(ROOT / "Dockerfile").stages[0]
    sources = [
        src for ins in builder.all("COPY") for src in ins.args.split()[:-1] if not src.startswith("--")
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not dockerignore_excludes(patterns, src), f"{src} is excluded by .dockerignore"
    # and what must never reach an image stays out
    for secretish in [".venv", ".git", "tests", ".lab", "operator/k3s_deploy/__pycache__/x.pyc"]:
        assert dockerignore_excludes(patterns, secretish), secretish


def test_reader_handles_continuations_and_comments() -> None:
    text = "# c\nFROM a:1 AS b\nRUN one \\\n  # inner comment\n  two\n\nENV A=1 B=2\n"
    assert logical_lines(text) == ["FROM a:1 AS b", "RUN one two", "ENV A=1 B=2"]
    assert dockerignore_excludes(["*", "!keep"], "keep/x") is False
    assert dockerignore_excludes(["*", "!keep"], "drop") is True
