"""One stage process of the multi-process executor: ``python -m byteor.runtime._stage_main CONFIG``.

``CONFIG`` is a JSON object written by :mod:`byteor.runtime.mp` (ring path, consumer index, the stage's
op / delta / resolver key, wait strategy, resolver context). The process attaches the ring by path,
registers itself as a participant, completes any crash-interrupted modification of its consumer cell
(``recover``) and consumes from its gating sequence + 1, so a restarted stage resumes exactly where
the dead one stopped. It exits 0 once ``stop`` is set and it has consumed everything published.

Exit codes: 0 drained; :data:`EXIT_STAGE_FAILED` the stage itself failed (an exception, or a side
effect that finally failed): the supervisor stops the pipeline instead of restarting it, and reads
the reason from ``error_path``; anything else (a crash, a signal) is a death the supervisor restarts.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from typing import Any

from .._fileio import write_text_atomic

EXIT_STAGE_FAILED = 70
#: Participant role ids written to the ring header.
ROLE_PRODUCER = 1
ROLE_EGRESS = 2
ROLE_STAGE_BASE = 16

_PR_SET_PDEATHSIG = 1
_POLL_NS = 200_000_000


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the supervisor dies, so no stage outlives its pipeline."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        sys.exit(1)


def _context(raw: dict[str, Any], events_path: str | None = None) -> Any:
    """The resolver context; side-effect records go to a bounded
    :class:`~byteor.runtime._events.FileEventRecorder` on ``events_path`` (performed actions are
    counted, dry-run records written, at most 10,000), which the supervisor's process merges into the
    run's own recorder when the run ends. Close ``ctx.recorder`` (when it has ``close``) at exit."""
    from .._stage import StageContext
    from ._events import FileEventRecorder

    return StageContext(posture=raw["posture"], dry_run=raw["dry_run"], spec_hash=raw["spec_hash"],
                        spec_dir=raw["spec_dir"], decisions=dict(raw["decisions"]),
                        recorder=FileEventRecorder(events_path) if raw.get("record") else None,
                        dead_letter_dir=raw.get("dead_letter_dir"), extra=dict(raw.get("extra", {})))


def close_recorder(ctx: Any) -> None:
    """Flush the counts of a context made by :func:`_context` (no-op for other recorders)."""
    close = getattr(getattr(ctx, "recorder", None), "close", None)
    if close is not None:
        close()


def _python_loop(ring: Any, native: Any, c: int, stage: Any, *, wait: int, hb: int) -> None:
    """Consume with a Python stage function until ``stop`` is set and everything is consumed.

    Every ring method is bound once here; the per-message path does no lookups beyond locals.
    """
    from .._stage import DROP

    fn, modifies = stage.fn, stage.modifies
    wait_for, length_of, stage_slot = ring.wait_for, ring.length, ring.stage_slot
    modify_begin, modify_commit = ring.modify_begin, ring.modify_commit
    set_length, release, heartbeat = ring.set_length, ring.release, ring.heartbeat
    dropped = native.DROPPED_LENGTH
    slot_bytes = ring.slot_bytes
    nxt = ring.next_for(c)
    while True:
        avail = wait_for(c, nxt, wait, _POLL_NS)
        if avail < 0:
            heartbeat(hb)
            if ring.stop_requested() and nxt > ring.cursor():
                return
            continue
        for seq in range(nxt, avail + 1):
            length = length_of(seq)
            if length == dropped:
                continue
            if modifies:
                new = fn(modify_begin(c, seq), length)
                if new == DROP:
                    new = dropped
                elif not isinstance(new, int) or new < 0 or new > slot_bytes:
                    raise ValueError(f"returned {new!r}; expected a length in 0..{slot_bytes} or DROP")
                modify_commit(c, seq, new)
            else:
                new = fn(stage_slot(seq), length)
                if new == DROP:
                    set_length(seq, dropped)
                release(c, seq)  # read-only stages (side effects): at most one repeat after a crash
            heartbeat(hb)  # per message: a slow but healthy stage is never taken for a hung one
        if modifies:
            release(c, avail)  # after a crash, recover() resumes from the redo record's done seq
        nxt = avail + 1


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    _die_with_parent(int(cfg["parent_pid"]))
    # Ctrl-C / SIGTERM to the process group go to the supervisor, which drains through the stop word.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    from .. import _native
    from .._errors import ByteorError
    from ..shm import attach_ring
    from ..spec.model import StageV1
    from ._tuning import tune_this_process
    from .registry import resolve_stage

    c = int(cfg["consumer"])
    wait = int(cfg["wait"])
    stage = StageV1(id=cfg["stage_id"], op=cfg["op"], delta=cfg.get("delta"),
                    resolver_key=cfg.get("resolver_key"))
    resolved = None
    ring = None
    ctx = None
    hb = -1
    try:
        # once per process, before anything runs: profile knobs, logged and recorded
        tuned, _report = tune_this_process(cfg.get("tuning"), cfg.get("tuning_role", cfg["stage_id"]))
        if tuned is not None:
            wait = int(getattr(_native, "WAIT_" + tuned.upper()))
        ring = attach_ring(cfg["ring"], expect_hash=bytes.fromhex(cfg["hash_hex"]))
        hb = ring.register_participant(ROLE_STAGE_BASE + int(cfg["index"]), os.getpid())
        ring.recover(c)
        ctx = _context(cfg["context"], cfg.get("events_path"))
        resolved = resolve_stage(stage, int(cfg["index"]), ctx)
        if resolved.builtin is not None and cfg.get("native", True):
            name, delta = resolved.builtin
            op = _native.OP_ADD_U8 if name == "add_u8" else _native.OP_IDENTITY
            ring.run_builtin(c, op, delta, wait, heartbeat_slot=hb)
        else:
            _python_loop(ring, _native, c, resolved, wait=wait, hb=hb)
    except (ByteorError, Exception) as exc:
        msg = f"stage {int(cfg['index'])} {stage.id!r} failed: {type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            write_text_atomic(cfg["error_path"], msg)  # replaces, never follows, a link planted there
        sys.stderr.write(f"byteor: {msg}\n")
        return EXIT_STAGE_FAILED
    finally:
        if resolved is not None and resolved.close is not None:
            resolved.close()
        close_recorder(ctx)
        if ring is not None:
            if hb >= 0:
                ring.unregister_participant(hb, True)
            ring.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
