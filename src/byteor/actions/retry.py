"""Retry shape for action stages: ``BYTEOR_ACTION_MAX_RETRIES``, ``BYTEOR_ACTION_RETRY_BASE_MS``.

Attempt ``n`` (0-based) that failed retryably waits ``base_ms * 2**n`` milliseconds, capped at
:data:`MAX_DELAY_S`, before attempt ``n + 1``; at most ``max_retries`` retries follow the first try.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .._errors import UsageError

__all__ = ["DEFAULT_BASE_MS", "DEFAULT_MAX_RETRIES", "MAX_DELAY_S", "RetryConfig", "env_number"]

DEFAULT_MAX_RETRIES = 3
DEFAULT_BASE_MS = 100
MAX_DELAY_S = 30.0


def env_number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False,
               minimum: float = 0.0) -> float:
    """A numeric environment variable, ``default`` when unset or empty; :class:`UsageError` naming
    the variable when it is not a number or below ``minimum``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{name}={raw!r} is not {kind}") from None
    if not math.isfinite(value) or value < minimum:
        raise UsageError(f"{name}={raw!r} must be a finite number >= {minimum:g}")
    return value


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_retries: int = DEFAULT_MAX_RETRIES
    base_ms: int = DEFAULT_BASE_MS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryConfig:
        env = os.environ if env is None else env
        retries = int(env_number(env, "BYTEOR_ACTION_MAX_RETRIES", DEFAULT_MAX_RETRIES, integer=True))
        base = int(env_number(env, "BYTEOR_ACTION_RETRY_BASE_MS", DEFAULT_BASE_MS, integer=True))
        return cls(retries, base)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        return float(min(self.base_ms * (2 ** min(attempt, 30)) / 1000.0, MAX_DELAY_S))
