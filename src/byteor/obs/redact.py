"""Masking for everything observability writes: log lines, metric labels, ``top`` output.

Two functions, and every obs writer goes through them: :func:`mask` for one text, :func:`mask_value`
for a JSON-like value (every string inside it masked, keys kept). They hide

* the userinfo of any ``scheme://user:password@host`` in the text (``scheme://<redacted>@host``) and
  the value of a query parameter whose name marks a credential (``?token=<redacted>``);
* every value of a secret-named environment variable (a name containing ``KEY``, ``TOKEN``,
  ``SECRET``, ``PASSWORD``, ``PASS``, ``CREDENTIAL``, ``AUTH``, ...) and every credential found in a
  URL-valued variable, wherever it appears in the text (values of at least 6 characters).

This module is deliberately small: the package's one redaction module, when present, supplies the
rules (:mod:`byteor._redact`), and this module only adapts it to the two functions obs needs.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["REDACTED", "mask", "mask_value"]

REDACTED = "<redacted>"
_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASS", "PWD", "CREDENTIAL", "AUTH", "COOKIE",
            "SESSION", "PRIVATE", "JWT", "WEBHOOK", "APPROVAL", "SIGNATURE")
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})
_SECRET_QUERY = frozenset({"sig", "signature", "code", "hmac", "pw", "p"})
_MIN_CHARS = 6
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"<>]*)")
_QUERY_PAIR = re.compile(r"([^&=#]*)(=?)([^&#]*)")


def _secret_name(name: str) -> bool:
    upper = name.upper()
    return upper not in _NOT_SECRET and any(m in upper for m in _MARKERS)


def _url_parts(rest: str) -> tuple[str, str]:
    """``rest`` (after ``scheme://``) split into userinfo ("" when none) and what follows it."""
    last = rest.rfind("@")
    if last < 0:
        return "", rest
    head = re.split(r"[/?#]", rest[:last], maxsplit=1)[0]
    if ":" in head and not head.split(":", 1)[1].isdigit():
        return rest[:last], rest[last + 1:]  # user:password@ whose password holds / ? # or @
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    at = authority.rfind("@")
    return (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)


def _redact_query(query: str) -> str:
    def one(m: re.Match[str]) -> str:
        name, eq, value = m.group(1), m.group(2), m.group(3)
        if eq and value and value != REDACTED and (_secret_name(name) or name.lower() in _SECRET_QUERY):
            return f"{name}={REDACTED}"
        return m.group(0)

    return _QUERY_PAIR.sub(one, query)


def _redact_url(m: re.Match[str]) -> str:
    userinfo, rest = _url_parts(m.group("rest"))
    out = m.group("scheme") + (f"{REDACTED}@" if userinfo else "")
    path, q, query = rest.partition("?")
    if not q:
        return out + rest
    query, h, frag = query.partition("#")
    return out + path + "?" + _redact_query(query) + h + frag


def _known_values() -> list[str]:
    found: set[str] = set()
    for name, value in os.environ.items():
        if not value:
            continue
        if _secret_name(name):
            found.add(value)
        for m in _URL.finditer(value) if "://" in value else ():
            userinfo, _rest = _url_parts(m.group("rest"))
            if userinfo:
                found.add(userinfo)
                found.add(userinfo.split(":", 1)[-1])
    return sorted((v for v in found if len(v) >= _MIN_CHARS), key=len, reverse=True)


def _fallback_mask(text: str) -> str:
    if "://" in text:
        text = _URL.sub(_redact_url, text)
    for value in _known_values():
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def mask(text: str) -> str:
    """``text`` safe to log, label or show: URL credentials and known secret values hidden."""
    return _fallback_mask(text)


def mask_value(obj: Any) -> Any:
    """A copy of a JSON-like value with every string in it passed through :func:`mask`."""
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, list | tuple):
        return [mask_value(v) for v in obj]
    if isinstance(obj, dict):
        return {k: mask_value(v) for k, v in obj.items()}
    return obj
