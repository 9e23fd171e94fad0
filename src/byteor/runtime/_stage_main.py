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

from .._errors import StageContractError
from .._stage import FILTER, INPLACE, MAP, READONLY, WRITING_FORMS, ResolvedStage, describe_failure
from ._child import EXIT_STAGE_FAILED, close_recorder, context_from_json, enter_child, write_error

#: Participant role ids written to the ring header.
ROLE_PRODUCER = 1
ROLE_EGRESS = 2
ROLE_STAGE_BASE = 16
#: LaneGraph role i of the plan writing a multi-producer lane (``run_role(participant_role=...)``).
ROLE_LANE_BASE = 256


class _StageError(Exception):
    """A stage failed on a message: the text names the stage and the message."""


def _run_python_stage(ring: Any, native: Any, c: int, stage: ResolvedStage, name: str, *, wait: int,
                      hb: int) -> None:
    """Consume with a Python stage (``Ring.run_stage``: the core walks the ring and calls the
    function once per message in its form) until ``stop`` is set and everything is consumed.

    Writing forms (map, in place) work on the consumer's scratch copy and commit it under the
    ring's redo marker, so a crash never leaves a half-changed slot and a restart never applies a
    change twice. Read-only forms (filter, read-only) see the message itself and release it right
    after the call: after a crash at most the one message in flight is seen again."""
    form = {MAP: native.FORM_MAP, FILTER: native.FORM_FILTER, INPLACE: native.FORM_INPLACE,
            READONLY: native.FORM_READONLY}[str(stage.form)]
    try:
        ring.run_stage(c, stage.fn, form, wait, heartbeat_slot=hb,
                       side_effect=stage.form not in WRITING_FORMS, contract_error=StageContractError)
    except Exception as exc:
        seq = getattr(exc, "failed_seq", None)
        if seq is None:
            raise
        raise _StageError(describe_failure(name, int(seq), exc)) from exc


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
            _run_python_stage(ring, _native, c, resolved, name, wait=wait, hb=hb)
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
