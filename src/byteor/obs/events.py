"""Lifecycle events: the one way byteor reports what happens to a run (start, a stage restarted,
an adapter reconnecting, a policy decision, drain, finish), as text for a person or as one JSON
object per line for a log pipeline.

``emit(event, message, **fields)`` writes one line to stderr:

* ``text`` (the default): ``byteor: <message>`` for the events a person at a terminal needs
  (restarts, failures, degraded tuning, the run summary); routine lifecycle events (a stage started,
  a policy decision, drain) are emitted with ``text=False`` and ``debug`` events never show here;
* ``json``: ``{"ts", "level", "pipeline", "event", "message", "pid", ...fields}`` for every event,
  ``ts`` in RFC 3339 UTC with milliseconds, ``level`` one of :data:`LEVELS`.

The message and every string in the fields pass through :func:`byteor.obs.redact.mask` (URL
credentials and the values of secret-named environment variables never reach a log). The format
is chosen with :func:`configure` (``run --log-format``, ``runtime.log_format``) and inherited by
child processes through ``BYTEOR_LOG_FORMAT`` / ``BYTEOR_LOG_PIPELINE``, so stage and role processes
speak the same way as their parent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from .redact import mask, mask_value

__all__ = ["LEVELS", "LOG_FORMATS", "configure", "emit", "log_format"]

LOG_FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
_ENV_FORMAT = "BYTEOR_LOG_FORMAT"
_ENV_PIPELINE = "BYTEOR_LOG_PIPELINE"
_CORE = ("ts", "level", "pipeline", "event", "message", "pid")


def configure(fmt: str | None = None, *, pipeline: str | None = None) -> None:
    """Set the format (``text`` or ``json``) and the pipeline name for this process and its children."""
    if fmt is not None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
        os.environ[_ENV_FORMAT] = fmt
    if pipeline is not None:
        os.environ[_ENV_PIPELINE] = pipeline


def log_format() -> str:
    """The format in effect in this process (``text`` unless configured or inherited)."""
    fmt = os.environ.get(_ENV_FORMAT)
    return fmt if fmt in LOG_FORMATS else "text"


def _timestamp(now: float) -> str:
    whole = int(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((now - whole) * 1000):03d}Z"


def emit(event: str, message: str, *, level: str = "info", who: str = "byteor", text: bool = True,
         **fields: Any) -> None:
    """Report one event. ``event`` is a dotted name (``stage.restarted``); ``message`` the line a
    person reads (the text format prints it after ``who:``, unless ``text`` is False or the level is
    ``debug``); ``fields`` the structured details. Field names that collide with the record's own
    keys are dropped."""
    if level not in LEVELS:
        level = "info"
    if log_format() == "json":
        record: dict[str, Any] = {"ts": _timestamp(time.time()), "level": level,
                                  "pipeline": os.environ.get(_ENV_PIPELINE), "event": event,
                                  "message": mask(message), "pid": os.getpid()}
        for key, value in fields.items():
            if key not in _CORE:
                record[key] = mask_value(value)
        line = json.dumps(record, default=str, separators=(",", ":"))
    elif level == "debug" or not text:
        return
    else:
        line = f"{who}: {mask(message)}"
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or gone: an event is never worth a crash
        pass
