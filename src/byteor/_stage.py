"""The contract between executors and stage implementations.

A stage key (``add_u8``, ``http_post:https://...``, ``dataguard:pii``, ``py:mod:fn``) is resolved
**once at startup** into a :class:`ResolvedStage`; the executor then calls ``fn`` per message and
never looks anything up again.

``fn(slot, length) -> int`` receives a writable ``memoryview`` of the whole slot (``slot_bytes`` long;
the message is ``slot[:length]``) and returns the message's new length (``0..len(slot)``), or
:data:`DROP` to drop the message (later stages and egress skip it). A stage with
``modifies=False`` must not write the slot and must return ``length``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["APPROVAL_COVERS", "APPROVAL_EXPIRES_AT", "APPROVAL_ID", "DROP", "ResolvedStage", "StageContext",
           "StageFn"]

#: Returned by a stage function to drop the message.
DROP = -1

StageFn = Callable[[memoryview, int], int]

#: ``StageContext.extra`` keys set by the policy gate when decisions rely on a verified approval:
#: its ``expires_at`` (RFC 3339), its id, and the stage keys allowed only because of it (one per
#: line). Plain strings, so they reach stage processes with the rest of ``extra``.
APPROVAL_EXPIRES_AT = "approval_expires_at"
APPROVAL_ID = "approval_id"
APPROVAL_COVERS = "approval_covers"


@dataclass(frozen=True)
class StageContext:
    """What a resolver may need at startup. Built once by ``run`` (or replay) from the command line.

    ``decisions`` maps a stage key to its policy decision (``Allow``, ``DryRunOnly``, ...), computed
    by the policy gate before anything runs; action resolvers honour it. ``recorder`` receives one
    dict per suppressed (dry-run) or performed side effect when set (replay audits, --dry-run
    reports). ``extra`` carries family-specific settings (DataGuard registry root, ...) and, when an
    approval allowed some stages, when it expires (:data:`APPROVAL_EXPIRES_AT`): an action stage
    stops performing its side effect at that moment and dead-letters each message instead.
    """

    posture: str = "dev"
    dry_run: bool = False
    spec_hash: str = ""
    spec_dir: str = "."
    decisions: dict[str, str] = field(default_factory=dict)
    recorder: Callable[[dict[str, Any]], None] | None = None
    dead_letter_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedStage:
    """A stage ready to run: the per-message function and what the executor must know about it."""

    key: str
    fn: StageFn
    modifies: bool
    side_effect: bool = False
    family: str | None = None
    target: str | None = None
    close: Callable[[], None] | None = None
    #: Set for the builtin kernels the native core runs without Python: ("identity", 0) / ("add_u8", d).
    builtin: tuple[str, int] | None = None
