"""Small helpers shared by the policy modules: base64url without padding, RFC 3339 UTC times,
durations."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

__all__ = ["b64url_decode", "b64url_encode", "format_rfc3339", "parse_duration", "parse_rfc3339", "utc_now"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`; raises ``ValueError`` on anything else.

    Padding, the standard alphabet (``+``, ``/``), whitespace and impossible lengths are refused,
    so a credential has exactly one spelling.
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64url without padding") from exc
    if b64url_encode(data) != text:  # non-zero trailing bits: a second spelling of the same bytes
        raise ValueError("not canonical base64url")
    return data


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_rfc3339(when: datetime) -> str:
    """``2026-11-23T10:00:00Z`` (UTC, whole seconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def parse_rfc3339(text: str) -> datetime:
    """Parse the one spelling byteor writes, ``2026-11-23T10:00:00Z`` (UTC, whole seconds, upper-case
    ``T`` and ``Z``); anything else (another offset, fractions, ``z``, a space) is a ``ValueError``,
    so a signed timestamp has exactly one spelling."""
    if not isinstance(text, str) or not _RFC3339_UTC.fullmatch(text):
        raise ValueError(f"not an RFC 3339 UTC timestamp like 2026-11-23T10:00:00Z: {text[:40]!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """A positive duration written as seconds or ``N`` followed by ``s``, ``m``, ``h`` or ``d``
    (``90``, ``15m``, ``8h``, ``30d``); ``ValueError`` for anything else, zero included."""
    m = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"expected a positive number of seconds or N followed by s, m, h or d, got {text!r}")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
