"""Redrive: re-send dead-lettered actions under a fresh policy decision.

The caller gates the *current* spec first (:func:`byteor.policy.gate.gate_run`); a record is
delivered only when its stage key is in that spec and the key's decision is ``Allow``. Delivered
records are marked in ``redriven.jsonl`` so that a second redrive does not send them again; a
record whose delivery fails again stays pending (it is not appended a second time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import ActionFailed
from .._stage import StageContext
from ..policy.decisions import ALLOW, DRY_RUN_ONLY
from ._resolve import Action, build_action
from .deadletter import DeadLetterJournal

__all__ = ["RedriveOutcome", "redrive"]


@dataclass(frozen=True)
class RedriveOutcome:
    id: str
    stage_key: str
    target: str
    outcome: str  # delivered | failed | dry_run | skipped
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "stage_key": self.stage_key, "target": self.target,
                "outcome": self.outcome, "detail": self.detail}


def redrive(journal: DeadLetterJournal, ctx: StageContext, *,
            progress: Callable[[RedriveOutcome], None] | None = None) -> list[RedriveOutcome]:
    """Deliver every pending record allowed by ``ctx.decisions``; return one outcome per record."""
    actions: dict[str, Action] = {}
    outcomes: list[RedriveOutcome] = []
    try:
        for rec in journal.pending():
            decision = DRY_RUN_ONLY if ctx.dry_run else ctx.decisions.get(rec.stage_key)
            if decision is None:
                out = RedriveOutcome(rec.id, rec.stage_key, rec.target, "skipped",
                                     "its stage key is not in this spec")
            elif decision == DRY_RUN_ONLY:
                out = RedriveOutcome(rec.id, rec.stage_key, rec.target, "dry_run",
                                     f"would re-send {len(rec.input)} bytes ({rec.idempotency_key})")
                if ctx.recorder is not None:
                    ctx.recorder({"action": rec.family, "stage": rec.stage_key, "target": rec.target,
                                  "idempotency_key": rec.idempotency_key, "decision": DRY_RUN_ONLY,
                                  "bytes": len(rec.input)})
            elif decision != ALLOW:
                out = RedriveOutcome(rec.id, rec.stage_key, rec.target, "skipped", f"decision is {decision}")
            else:
                action = actions.get(rec.stage_key)
                if action is None:
                    action = actions[rec.stage_key] = build_action(rec.stage_key)
                try:
                    action.perform(rec.input)
                except ActionFailed as exc:
                    out = RedriveOutcome(rec.id, rec.stage_key, rec.target, "failed", str(exc))
                else:
                    journal.mark_redriven(rec.id)
                    out = RedriveOutcome(rec.id, rec.stage_key, rec.target, "delivered",
                                         f"{len(rec.input)} bytes ({rec.idempotency_key})")
            outcomes.append(out)
            if progress is not None:
                progress(out)
    finally:
        for action in actions.values():
            action.close()
    return outcomes
