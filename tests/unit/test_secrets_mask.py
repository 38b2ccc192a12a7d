"""secrets_mask: the one masking module (registration, shapes, lines, lengths, concurrency)."""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections.abc import Iterator

import pytest

from k3s_deploy import secrets_mask
from k3s_deploy.secrets_mask import MASK, MIN_LINE_LENGTH, MIN_SECRET_LENGTH, redact, register_secret

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBzZWNyZXRzZWNyZXRzZWNyZXRzZWNyZXRzZWNyZXQAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
K3S_TOKEN = (
    "K1075f3c9a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6::server:4f1e2d3c4b5a69788796a5b4"
)
PVE_SECRET = "8d3c2b1a-0f9e-4d8c-b7a6-a1b2c3d4e5f6"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    secrets_mask.SECRETS.clear()
    yield
    secrets_mask.SECRETS.clear()


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"key is {PEM} done", "c2VjcmV0c2VjcmV0", "-----BEGIN OPENSSH PRIVATE KEY-----"),
        (PEM[:120], "b3BlbnNzaC1rZXkt", "BEGIN OPENSSH PRIVATE KEY"),  # truncated key
        (f"Authorization: PVEAPIToken=root@pam!k3sd={PVE_SECRET}", PVE_SECRET, "root@pam!k3sd="),
        (f"cookie PVEAuthCookie=PVE:root@pam:65F1::{PVE_SECRET}; path=/", PVE_SECRET, "PVEAuthCookie="),
        (f"K3S_TOKEN={K3S_TOKEN} sh -", "4f1e2d3c4b5a69788796a5b4", "K3S_TOKEN=K10"),
        ("GET https://root:hunter2secret@pve.example:8006/api2/json", "hunter2secret", "https://root:"),
        ('{"username": "root@pam", "password": "s3cr3t-pw"}', "s3cr3t-pw", '"username": "root@pam"'),
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig", "eyJhbGciOiJSUzI1NiJ9", "Bearer"),
        ("client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRF", "LS0tLS1CRUdJTiBFQyBQUklWQVRF", "client-key-data"),
    ],
)
def test_secret_shapes_are_masked_unregistered(text: str, secret: str, kept: str) -> None:
    out = redact(text)
    assert secret not in out
    assert kept in out
    assert MASK in out


def test_ordinary_text_is_untouched() -> None:
    text = "cloned template 9000 to vm 101 on pve1 (task UPID:pve1:00001:qmclone) in 3.2s; ip 127.0.10.5"
    assert redact(text) == text


def test_registered_value_is_masked_as_a_substring_and_in_base64() -> None:
    token = "tenant-join-" + secrets.token_hex(8)
    assert redact(f"installer said: {token}!") == f"installer said: {token}!"  # not yet known
    register_secret(token.encode())
    assert redact(f"installer said: {token}!") == f"installer said: {MASK}!"
    assert redact(f"prefix{token}suffix") == f"prefix{MASK}suffix"
    encoded = base64.b64encode(token.encode()).decode()
    assert redact(f'{{"data": {{"token": "{encoded}"}}}}') == f'{{"data": {{"token": "{MASK}"}}}}'


def test_surrounding_whitespace_of_a_value_does_not_hide_it() -> None:
    register_secret("spaced-out-token\n")  # Secrets made with --from-file end with a newline
    assert redact("token spaced-out-token used") == f"token {MASK} used"


def test_each_line_of_a_multiline_value_is_masked_but_not_pem_armour() -> None:
    register_secret(PEM)
    body = PEM.splitlines()[1:3]
    for line in body:
        out = redact(f"ssh said: {line}")
        assert line not in out and out == f"ssh said: {MASK}"
    cert = (
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGVCb2R5\n-----END CERTIFICATE-----\n"
    )
    register_secret(cert)  # a caCert key: its armour lines name the kind of thing, nothing more
    assert redact("expected -----BEGIN CERTIFICATE-----") == "expected -----BEGIN CERTIFICATE-----"
    assert redact("MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGVCb2R5") == MASK


def test_value_part_of_key_value_lines_is_masked() -> None:
    register_secret("user: admin\npassword: correct-horse-battery\n")
    assert redact("logging in with correct-horse-battery") == f"logging in with {MASK}"


def test_minimum_lengths() -> None:
    short = "a" * (MIN_SECRET_LENGTH - 1)
    register_secret("abc")  # a 3-character secret would shred every log line
    register_secret(short)
    assert redact(f"abc {short} abcdef") == f"abc {short} abcdef"
    just_long_enough = "q" * MIN_SECRET_LENGTH
    register_secret(just_long_enough)
    assert redact(f"x {just_long_enough} x") == f"x {MASK} x"
    # lines of a multi-line value: from MIN_LINE_LENGTH, shorter lines (YAML keys...) stay readable
    register_secret("k" * (MIN_LINE_LENGTH - 1) + "\n" + "L" * MIN_LINE_LENGTH + "\n")
    assert redact("k" * (MIN_LINE_LENGTH - 1)) == "k" * (MIN_LINE_LENGTH - 1)
    assert redact("L" * MIN_LINE_LENGTH) == MASK


def test_longest_value_wins_so_nothing_is_left_half_masked() -> None:
    register_secret("abcdef")
    register_secret("abcdef-and-more")
    assert redact("abcdef-and-more") == MASK


def test_redact_status_masks_messages_only() -> None:
    register_secret("AgentReady-lookalike")  # a tenant can register any string as a Secret value
    register_secret("Ready-and-secret")
    status = {
        "phase": "Ready-and-secret",
        "conditions": [{"type": "AgentReady-lookalike", "status": "True", "message": "x Ready-and-secret"}],
        "nodes": [{"name": "n1", "message": "install said AgentReady-lookalike"}],
    }
    out = secrets_mask.redact_status(status)
    assert out["phase"] == "Ready-and-secret"  # names and types are never touched
    assert out["conditions"][0]["type"] == "AgentReady-lookalike"
    assert out["conditions"][0]["message"] == f"x {MASK}"
    assert out["nodes"][0]["message"] == f"install said {MASK}"
    assert status["nodes"][0]["message"] == "install said AgentReady-lookalike", "the input is not changed"


def test_registration_from_threads_while_masking() -> None:
    """Adapters register from worker threads while the loop and log handlers mask."""
    values = [f"concurrent-secret-{i:04d}-{secrets.token_hex(4)}" for i in range(400)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def masker() -> None:
        try:
            while not stop.is_set():
                redact(" ".join(values[:50]))
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    def registrar(chunk: list[str]) -> None:
        try:
            for value in chunk:
                register_secret(value)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    maskers = [threading.Thread(target=masker) for _ in range(2)]
    registrars = [threading.Thread(target=registrar, args=(values[i::4],)) for i in range(4)]
    for t in maskers + registrars:
        t.start()
    for t in registrars:
        t.join()
    stop.set()
    for t in maskers:
        t.join()
    assert not errors
    assert all(v in secrets_mask.SECRETS for v in values), "no registration lost to a race"
    assert redact(" ".join(values)) == " ".join([MASK] * len(values))


async def test_registration_from_tasks_and_worker_threads() -> None:
    async def one(i: int) -> str:
        value = f"async-secret-{i:03d}-{secrets.token_hex(4)}"
        if i % 2:
            await asyncio.to_thread(register_secret, value)
        else:
            register_secret(value)
        await asyncio.sleep(0)
        return value

    values = await asyncio.gather(*(one(i) for i in range(100)))
    assert all(redact(f"[{v}]") == f"[{MASK}]" for v in values)
