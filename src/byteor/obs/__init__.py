"""Observability glue every floor may use: lifecycle events (:mod:`.events`), masking of what they
and the metrics show (:mod:`.redact`), the per-run counters file stage processes increment
(:mod:`.counters`), and the Prometheus endpoint with health checks (:mod:`.metrics`).

This package imports only the package's ground floor (and ``prometheus_client``): the runtime, the
stage families and the adapters report through it; what a running pipeline looks like is read by
:mod:`byteor.runtime.observe` and handed to :mod:`.metrics` and ``byteor top``.
"""

from __future__ import annotations

from .events import LEVELS, LOG_FORMATS, configure, emit, log_format
from .redact import mask, mask_value

__all__ = ["LEVELS", "LOG_FORMATS", "configure", "emit", "log_format", "mask", "mask_value"]
