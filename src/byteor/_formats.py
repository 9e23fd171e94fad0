"""Small helpers shared by the policy modules: base64url without padding, RFC 3339 UTC times."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

__all__ = ["b64url_decode", "b64url_encode", "format_rfc3339", "parse_rfc3339", "utc_now"]

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


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset (``Z`` or ``+hh:mm``); ``ValueError`` else."""
    if not isinstance(text, str) or "T" not in text.upper():
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError(f"RFC 3339 timestamp without an offset: {text!r}")
    return value.astimezone(UTC)
