"""One stage process of the multi-process executor: ``python -m byteor.runtime._stage_main CONFIG``.

``CONFIG`` is a JSON object written by :mod:`byteor.runtime.mp` (ring path, consumer index, the stage's
op / delta / resolver key, wait strategy, resolver context). The process attaches the ring by path,
registers itself as a participant, completes any crash-interrupted modification of its consumer cell
(``recover``) and consumes from its gating sequence + 1, so a restarted stage resumes exactly where
the dead one stopped. It exits 0 once ``stop`` is set and it has consumed everything published.

Exit codes are those of :mod:`byteor.runtime._child`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .._stage import DROP, StageCall, describe_failure
from ._child import EXIT_STAGE_FAILED, close_recorder, context_from_json, enter_child, write_error

#: Participant role ids written to the ring header.
ROLE_PRODUCER = 1
ROLE_EGRESS = 2
ROLE_STAGE_BASE = 16
#: LaneGraph role i of the plan writing a multi-producer lane (``run_role(participant_role=...)``).
ROLE_LANE_BASE = 256

_POLL_NS = 200_000_000


class _StageError(Exception):
    """A stage failed on a message: the text names the stage and the message."""


def _python_loop(ring: Any, native: Any, c: int, call: StageCall, name: str, *, wait: int, hb: int) -> None:
    """Consume with a Python stage until ``stop`` is set and everything is consumed.

    Writing forms (map, in place) work on the consumer's scratch copy and commit it under the
    ring's redo marker, so a crash never leaves a half-changed slot and a restart never applies a
    change twice. Read-only forms see a read-only view of the message and release it at once:
    after a crash at most one side effect repeats."""
    fn = call.call
    writes = call.writes
    wait_for, length_of, stage_slot = ring.wait_for, ring.length, ring.stage_slot
    modify_begin, modify_commit = ring.modify_begin, ring.modify_commit
    set_length, release, heartbeat = ring.set_length, ring.release, ring.heartbeat
    dropped = native.DROPPED_LENGTH
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
            try:
                if writes:
                    new = fn(modify_begin(c, seq), length)
                    modify_commit(c, seq, dropped if new == DROP else new)
                else:
                    if fn(stage_slot(seq).toreadonly(), length) == DROP:
                        set_length(seq, dropped)
                    release(c, seq)
            except Exception as exc:
                if writes and seq > nxt:  # what was finished before the failing message still flows on
                    release(c, seq - 1)
                raise _StageError(describe_failure(name, seq, exc)) from exc
            heartbeat(hb)  # per message: a slow but healthy stage is never taken for a hung one
        # Writing forms: after a crash, recover() resumes from the redo record's done seq. Every form:
        # messages dropped before this stage were skipped above and are released here with the rest.
        release(c, avail)
        nxt = avail + 1


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    enter_child(cfg)

    from .. import _native
    from .._errors import ByteorError
    from ..shm import attach_ring
    from ..spec.model import StageV1
    from ._tuning import tune_this_process
    from .registry import resolve_stage

    c = int(cfg["consumer"])
    wait = int(cfg["wait"])
    index = int(cfg["index"])
    stage = StageV1(id=cfg["stage_id"], op=cfg["op"], delta=cfg.get("delta"),
                    resolver_key=cfg.get("resolver_key"))
    name = f"stage {index} {stage.id!r}"
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
        hb = ring.register_participant(ROLE_STAGE_BASE + index, os.getpid())
        ring.recover(c)
        ctx = context_from_json(cfg["context"], cfg.get("events_path"))
        resolved = resolve_stage(stage, index, ctx)
        if resolved.builtin is not None and cfg.get("native", True):
            op_name, delta = resolved.builtin
            op = _native.OP_ADD_U8 if op_name == "add_u8" else _native.OP_IDENTITY
            ring.run_builtin(c, op, delta, wait, heartbeat_slot=hb)
        else:
            _python_loop(ring, _native, c, StageCall(resolved, int(ring.slot_bytes)), name, wait=wait, hb=hb)
    except _StageError as exc:
        write_error(cfg["error_path"], str(exc))
        return EXIT_STAGE_FAILED
    except (ByteorError, Exception) as exc:
        write_error(cfg["error_path"], describe_failure(name, None, exc))
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
