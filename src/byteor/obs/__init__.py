"""Observability: lifecycle events (:mod:`.events`)."""

from __future__ import annotations

from .events import LOG_FORMATS, configure, emit

__all__ = ["LOG_FORMATS", "configure", "emit"]
