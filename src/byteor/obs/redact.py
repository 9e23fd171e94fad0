"""Masking for everything observability writes: log lines, metric labels, ``top`` output.

Two functions, and every obs writer goes through them: :func:`mask` for one text, :func:`mask_value`
for a JSON-like value (every string inside it masked, keys kept). Both are the package's one
redaction module, :mod:`byteor._redact` (its rules are listed there and in docs/security.md),
adapted to the two shapes obs needs: URL credentials and credential-like query values hidden, and
every secret value of the environment masked wherever it appears.
"""

from __future__ import annotations

from typing import Any

from .._redact import REDACTED, redact_strings, scrub

__all__ = ["REDACTED", "mask", "mask_value"]


def mask(text: str) -> str:
    """``text`` safe to log, label or show: URL credentials and known secret values hidden."""
    return scrub(text)


def mask_value(obj: Any) -> Any:
    """A copy of a JSON-like value with every string in it made safe (stage keys redacted as keys)."""
    return redact_strings(obj)
