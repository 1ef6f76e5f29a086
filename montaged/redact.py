"""Keep secrets out of what Montage prints: config errors, ``check`` output, URLs in log lines.

A config error must show the value it refuses (``key: problem (got value)``), yet that value may
be a database URL with its password or a Deepgram key under a mistyped variable, and
``--check-config`` runs as ``ExecStartPre``, so whatever it prints lands in the journal. Three
rules: a value under a key that names a credential is hidden whole; a URL keeps everything but
its password (and credential query parameters); a known secret's exact text is masked anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
# whole words of a key that make it a credential (``deepgram_apikey``, ``DB_PASSWD``, ``auth``)
_WORDS = frozenset({"password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token",
                    "tokens", "credential", "credentials", "apikey", "auth", "authorization", "bearer"})
_PARTS = ("password", "passwd", "secret", "apikey", "credential")  # also inside a word
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_QUERY_PARAM = re.compile(r"([?&;])([^=&#;\s]+)=([^&#;\s]*)")
_SHORTEST_MASKED = 4  # a secret this short would mask ordinary words everywhere


class Hidden:
    """Stands in for a whole hidden value; its repr is ``<hidden>`` (as config errors print it)."""

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


HIDDEN = Hidden()


def names_credential(key: str) -> bool:
    """Whether a key (config key, variable name, query parameter) names a credential.

    ``api_key``, ``deepgram_apikey``, ``redis_password``, ``access_token``, ``MONTAGE_DB_PASSWD``;
    not ``key_prefix`` (a key is a credential when "key" is its last word).
    """
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    if not words:
        return False
    return (any(w in _WORDS or any(p in w for p in _PARTS) for w in words)
            or words[-1] in ("key", "keys"))


def redact_url(url: str) -> str:
    """``postgresql://user:***@host/db?sslpassword=***``: the password of the user part and the
    values of credential query parameters masked, everything else as given.

    The user part runs to the last ``@`` before the query, so a password holding a raw ``@`` or
    ``/`` is masked whole too.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    tail = _QUERY_PARAM.sub(
        lambda m: f"{m[1]}{m[2]}={MASK}" if names_credential(m[2]) else m[0], tail)
    return f"{scheme}://{authority}{tail}"


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Every URL in ``text`` through :func:`redact_url`, then each known secret value masked."""
    text = _URL.sub(lambda m: redact_url(m[0]), text)
    for secret in sorted({s for s in secrets if len(s) >= _SHORTEST_MASKED}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_value(value: Any, secrets: Iterable[str] = (), *, key: str = "") -> Any:
    """A copy of ``value`` safe to print: hidden whole under a credential ``key``, strings through
    :func:`redact_text`, dicts and lists item by item (a dict's keys decide for their values)."""
    known = tuple(secrets)
    if key and names_credential(key):
        return HIDDEN
    if isinstance(value, str):
        return redact_text(value, known)
    if isinstance(value, dict):
        return {k: redact_value(v, known, key=str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v, known) for v in value)
    return value
