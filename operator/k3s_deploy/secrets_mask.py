"""The one place that knows the operator's secrets and masks them wherever text leaves the process.

Values enter here once, where they enter the process: every value of every Secret the adapters read
(:func:`register_secret_data`), and the join token the operator generates. They are masked where
text is written: log records (``logs.RedactingFilter``, also in front of the Events kopf posts from
logs), the Events the operator posts, and the messages (conditions, nodes) of every status it writes.

Masked are the registered values, and shapes that are secret wherever they appear even if never
registered (PEM private keys, ``PVEAPIToken=user@realm!id=SECRET``, PVE tickets, K3s
``K10...::user:password`` tokens, passwords in URLs, bearer tokens, ``password=``-style pairs).

Lengths: a whole value is masked from :data:`MIN_SECRET_LENGTH` characters; shorter values would
shred ordinary words in every log line (a 3-letter password masked everywhere hides "the" and "pve"),
and a secret that short is not worth protecting. A multi-line value (a PEM key, an env file) is also
masked line by line, each line (and the value part of a ``key: value`` line) from
:data:`MIN_LINE_LENGTH` characters, so a key logged a line at a time stays hidden; PEM armour lines
(``-----BEGIN ...-----``) are not secret and stay readable. The base64 form of each value is masked
too (a Secret's body as the API carries it).

Imports only the standard library: services, adapters and logs all use it.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 6
MIN_LINE_LENGTH = 8

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys of any type, including a key cut off before its END line.
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
        ),
        rf"-----BEGIN \1PRIVATE KEY-----{MASK}-----END \1PRIVATE KEY-----",
    ),
    # Proxmox API token header: keep who, drop the secret.
    (re.compile(r"(PVEAPIToken[= ][^=\s]+=)[^\s'\",;]+"), rf"\1{MASK}"),
    # Proxmox ticket cookie and CSRF token.
    (re.compile(r"(PVEAuthCookie=)[^\s'\",;]+"), rf"\1{MASK}"),
    (re.compile(r"(CSRFPreventionToken[\"']?\s*[:=]\s*[\"']?)[^\s'\",;}]+"), rf"\1{MASK}"),
    # K3s secure tokens: K10<ca-hash>::<user>:<password>.
    (re.compile(r"K10[0-9a-fA-F]*::[^:\s]+:[^\s'\",;]+"), f"K10{MASK}"),
    # user:password@ in URLs.
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\1{MASK}@"),
    # Authorization: Bearer/Basic <credential>.
    (re.compile(r"((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{MASK}"),
    # key=value / "key": "value" pairs whose key says secret.
    (
        re.compile(
            r"((?:password|passwd|tokenSecret|token_secret|client-key-data|private_?key)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s'\",;&}]+",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
]

_KEY_VALUE = re.compile(r":\s|=")


def _is_armour(line: str) -> bool:
    return line.startswith("-----") and line.endswith("-----")


def candidates(value: str | bytes) -> set[str]:
    """The strings that stand for ``value`` in text: itself, its lines, its base64 form."""
    raw = value if isinstance(value, bytes) else value.encode()
    text = raw.decode("utf-8", "replace")
    found: set[str] = set()
    whole = text.strip()
    if len(whole) >= MIN_SECRET_LENGTH:
        found.add(whole)
        found.add(base64.b64encode(whole.encode()).decode())
        if whole != text:
            found.add(base64.b64encode(raw).decode())
    lines = text.splitlines()
    if len(lines) > 1:
        for line in (line.strip() for line in lines):
            if _is_armour(line):
                continue
            for piece in (line, _KEY_VALUE.split(line, maxsplit=1)[-1].strip().strip("\"'")):
                if len(piece) >= MIN_LINE_LENGTH:
                    found.add(piece)
    return found


class SecretRegistry:
    """Secret values seen at runtime, indexed by their first characters.

    Masking scans the text once and, at each position whose next :data:`MIN_SECRET_LENGTH` characters
    begin a registered value, masks the longest value found there (leftmost-longest, like a regex
    alternation sorted longest first). No regex is compiled: registering stays O(1) however many
    values are known (a compiled alternation made registration quadratic: 25 s for 800 values).

    Thread-safe: registration happens in worker threads (the adapters) and on the event loop; it
    swaps in a new index under a lock, and masking reads one immutable snapshot without locking.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._index: dict[str, tuple[str, ...]] = {}

    def register(self, value: str | bytes | None) -> None:
        if value is None:
            return
        fresh = candidates(value) - self._values
        if not fresh:  # the common case: a Secret read again, nothing new
            return
        with self._lock:
            fresh -= self._values
            index = dict(self._index)
            for item in fresh:
                key = item[:MIN_SECRET_LENGTH]
                index[key] = tuple(sorted({*index.get(key, ()), item}, key=len, reverse=True))
            self._index = index
            self._values = self._values | fresh

    def clear(self) -> None:
        with self._lock:
            self._values = frozenset()
            self._index = {}

    def __contains__(self, text: object) -> bool:
        return text in self._values

    def mask(self, text: str) -> str:
        index = self._index
        if not index:
            return text
        out: list[str] = []
        get, width = index.get, MIN_SECRET_LENGTH
        start = i = 0
        last = len(text) - width
        while i <= last:
            values = get(text[i : i + width])
            found = next((v for v in values if text.startswith(v, i)), None) if values else None
            if found is None:
                i += 1
                continue
            out += (text[start:i], MASK)
            i = start = i + len(found)
        if not out:
            return text
        out.append(text[start:])
        return "".join(out)


SECRETS = SecretRegistry()


def register_secret(value: str | bytes | None) -> None:
    """Mask this value (each long line of it, its base64 form) wherever text is written from now on."""
    SECRETS.register(value)


def register_secret_data(data: Mapping[str, str | bytes] | None) -> None:
    """Register every value of a Secret's data: the adapters call this for every Secret they read."""
    for value in (data or {}).values():
        SECRETS.register(value)


def redact(text: str) -> str:
    """Mask registered values and secret-shaped substrings."""
    text = SECRETS.mask(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_status(value: Any) -> Any:
    """A copy of a status with every ``message`` (at any depth: conditions, nodes) redacted.

    Only free text is touched: the registry is process-wide, so a tenant can register any string
    as a Secret value, and masking names, types or reasons would let them garble other tenants'
    statuses. Messages are where a guest's output and error texts land.
    """
    if isinstance(value, Mapping):
        return {
            k: redact(v) if k == "message" and isinstance(v, str) else redact_status(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_status(v) for v in value]
    return value
