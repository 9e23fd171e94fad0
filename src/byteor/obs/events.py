"""Lifecycle events: the one way byteor reports what happens to a run (start, a stage restarted,
an adapter reconnecting, drain, finish), as text for a person or as one JSON object per line.

``emit(event, message, **fields)`` writes to stderr. The text format is ``byteor: <message>``;
the JSON format is ``{"ts", "level", "pipeline", "event", "message", ...fields}``. The format is
chosen with :func:`configure` (``run --log-format``) and inherited by child processes through
``BYTEOR_LOG_FORMAT``, so stage and role processes speak the same way as their parent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

__all__ = ["LOG_FORMATS", "configure", "emit"]

LOG_FORMATS = ("text", "json")
_ENV_FORMAT = "BYTEOR_LOG_FORMAT"
_ENV_PIPELINE = "BYTEOR_LOG_PIPELINE"


def configure(fmt: str | None = None, *, pipeline: str | None = None) -> None:
    """Set the format (``text`` or ``json``) and the pipeline name for this process and its children."""
    if fmt is not None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
        os.environ[_ENV_FORMAT] = fmt
    if pipeline is not None:
        os.environ[_ENV_PIPELINE] = pipeline


def emit(event: str, message: str, *, level: str = "info", **fields: Any) -> None:
    """Report one event. ``event`` is a dotted name (``stage.restarted``); ``message`` the line a
    person reads; ``fields`` the structured details (never secrets: callers pass redacted values)."""
    if os.environ.get(_ENV_FORMAT) == "json":
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
                  "level": level, "pipeline": os.environ.get(_ENV_PIPELINE), "event": event, "message": message,
                  **fields}
        line = json.dumps(record, default=str, separators=(",", ":"))
    else:
        line = f"byteor: {message}"
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or gone: an event is never worth a crash
        pass
