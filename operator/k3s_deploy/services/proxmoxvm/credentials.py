"""Turn the credentials Secret into :class:`ProxmoxCredentials`, naming exactly what is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping

from k3s_deploy.api.common import CONTROL_CHAR
from k3s_deploy.errors import CredentialsError
from k3s_deploy.ports.kube import KubeGateway
from k3s_deploy.ports.proxmox import ProxmoxCredentials

_TOKEN_ID = re.compile(r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9.\-_]+$")
_USER = re.compile(r"^[^@!\s]+@[^@!\s]+$")


def _text(data: Mapping[str, bytes], key: str, *, secret: str, one_line: bool = True) -> str | None:
    """A key as text, surrounding whitespace dropped. Single-line keys refuse control characters: they
    go into HTTP headers and forms (a newline there splits a header). Never echoes the value."""
    raw = data.get(key)
    if raw is None:
        return None
    try:
        value = raw.decode().strip()
    except UnicodeDecodeError:
        raise CredentialsError(
            f"key {key!r} of the credentials Secret {secret!r} is not UTF-8 text", reason="SecretInvalid"
        ) from None
    if one_line and CONTROL_CHAR.search(value):
        raise CredentialsError(
            f"key {key!r} of the credentials Secret {secret!r} contains a control character (newline, tab, "
            "NUL, ...); store the value on one line",
            reason="SecretInvalid",
        )
    return value or None


def parse_credentials(
    secret_name: str,
    data: Mapping[str, bytes],
    *,
    fingerprint: str | None = None,
    insecure_skip_tls_verify: bool = False,
) -> ProxmoxCredentials:
    """Validate the Secret's keys; the messages never contain secret values."""
    where = f"Secret {secret_name!r}"
    url = _text(data, "url", secret=secret_name)
    if not url:
        raise CredentialsError(
            f"{where} has no key 'url' (e.g. https://pve.example:8006)", reason="SecretInvalid"
        )
    if not url.startswith("https://"):
        raise CredentialsError(f"{where}: 'url' must start with https://", reason="SecretInvalid")
    token_id, token_secret = (
        _text(data, "tokenId", secret=secret_name),
        _text(data, "tokenSecret", secret=secret_name),
    )
    username, password = (
        _text(data, "username", secret=secret_name),
        _text(data, "password", secret=secret_name),
    )
    ca_cert = _text(data, "caCert", secret=secret_name, one_line=False)
    if ca_cert is not None and "-----BEGIN CERTIFICATE-----" not in ca_cert:
        raise CredentialsError(f"{where}: 'caCert' is not a PEM certificate bundle", reason="SecretInvalid")
    if token_id or token_secret:
        if not (token_id and token_secret):
            raise CredentialsError(f"{where}: set both 'tokenId' and 'tokenSecret'", reason="SecretInvalid")
        if not _TOKEN_ID.match(token_id):
            raise CredentialsError(
                f"{where}: 'tokenId' must look like user@realm!tokenname", reason="SecretInvalid"
            )
        return ProxmoxCredentials(
            url=url,
            token_id=token_id,
            token_secret=token_secret,
            ca_cert=ca_cert,
            fingerprint=fingerprint,
            insecure_skip_tls_verify=insecure_skip_tls_verify,
        )
    if username and password:
        if not _USER.match(username):
            raise CredentialsError(f"{where}: 'username' must look like user@realm", reason="SecretInvalid")
        return ProxmoxCredentials(
            url=url,
            username=username,
            password=password,
            ca_cert=ca_cert,
            fingerprint=fingerprint,
            insecure_skip_tls_verify=insecure_skip_tls_verify,
        )
    raise CredentialsError(
        f"{where} needs 'tokenId' and 'tokenSecret', or 'username' and 'password'", reason="SecretInvalid"
    )


async def load_credentials(
    kube: KubeGateway,
    namespace: str,
    secret_name: str,
    *,
    fingerprint: str | None = None,
    insecure_skip_tls_verify: bool = False,
) -> ProxmoxCredentials:
    data = await kube.read_secret(namespace, secret_name)
    if data is None:
        raise CredentialsError(
            f"Secret {secret_name!r} not found in namespace {namespace!r}; create it with the keys url, "
            "tokenId and tokenSecret (or username and password)",
            reason="SecretNotFound",
        )
    return parse_credentials(
        secret_name, data, fingerprint=fingerprint, insecure_skip_tls_verify=insecure_skip_tls_verify
    )
