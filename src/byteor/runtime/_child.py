"""What every runtime child process (a SingleRing stage, a LaneGraph role) shares with its parent.

The parent writes a JSON config (the resolver context, its ``sys.path``); the child rebuilds the
context, puts the parent's import path in front of its own (so ``py:`` stages import exactly what
the parent imported, with no ``PYTHONPATH`` needed), asks the kernel to kill it when the parent
dies, and ignores Ctrl-C (the parent drains through the ring's stop word).

Exit codes: 0 drained; :data:`EXIT_STAGE_FAILED` the stage or role failed on its own terms (an
exception, a side effect that finally failed, ``on_full=fail``): the supervisor stops the pipeline
and reads the reason from the error file; anything else is a death the supervisor restarts.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

from .._fileio import write_text_atomic
from .._stage import StageContext
from ..obs import counters
from ..obs.events import emit
from ._events import FileEventRecorder

__all__ = ["EXIT_STAGE_FAILED", "close_recorder", "context_from_json", "context_to_json", "enter_child",
           "write_error"]

EXIT_STAGE_FAILED = 70
_PR_SET_PDEATHSIG = 1


def context_to_json(ctx: StageContext) -> dict[str, Any]:
    """The part of a resolver context a child process needs (plain JSON values only)."""
    return {"posture": ctx.posture, "dry_run": ctx.dry_run, "spec_hash": ctx.spec_hash,
            "spec_dir": ctx.spec_dir, "decisions": dict(ctx.decisions),
            "dead_letter_dir": ctx.dead_letter_dir, "record": ctx.recorder is not None,
            "extra": {k: v for k, v in ctx.extra.items() if isinstance(v, str | int | float | bool)},
            "sys_path": [p for p in sys.path if p]}


def context_from_json(raw: dict[str, Any], events_path: str | None = None) -> StageContext:
    """The resolver context in the child. Side-effect records go to a bounded
    :class:`~byteor.runtime._events.FileEventRecorder` on ``events_path`` (performed actions are
    counted, dry-run records written, at most 10,000), which the parent merges into the run's own
    recorder when the run ends. Close it with :func:`close_recorder` at exit."""
    return StageContext(posture=raw["posture"], dry_run=raw["dry_run"], spec_hash=raw["spec_hash"],
                        spec_dir=raw["spec_dir"], decisions=dict(raw["decisions"]),
                        recorder=FileEventRecorder(events_path) if raw.get("record") else None,
                        dead_letter_dir=raw.get("dead_letter_dir"), extra=dict(raw.get("extra", {})))


def close_recorder(ctx: StageContext | None) -> None:
    """Flush the counts of a context made by :func:`context_from_json` (no-op for other recorders)."""
    close = getattr(getattr(ctx, "recorder", None), "close", None)
    if close is not None:
        close()


def enter_child(cfg: dict[str, Any]) -> None:
    """Set up this process as a child of ``cfg["parent_pid"]``: die with the parent, ignore SIGINT
    and SIGTERM (the parent drains), import from the parent's ``sys.path`` first, and count into
    the row of the run's counters file the parent gave it (``cfg["counters"]``)."""
    parent = int(cfg["parent_pid"])
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent_path = cfg.get("context", {}).get("sys_path") or []
    sys.path[:0] = [p for p in parent_path if p not in sys.path]
    counters.bind_config(cfg.get("counters"))


def write_error(path: str, message: str) -> None:
    """Leave the reason of a stage failure where the supervisor reads it (the parent reports it
    once, event ``stage.failed``); reported here (event ``stage.error``) only when that file cannot
    be written."""
    try:
        write_text_atomic(path, message)  # replaces, never follows, a link planted there
    except OSError:
        emit("stage.error", message, level="error")
