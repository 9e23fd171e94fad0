"""What both LaneGraph runners share: stage resolution, routing, journal locations, result."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._errors import PipelineFailed, SpecError, SpecIssue
from ..._stage import DROP, ResolvedStage, StageContext
from ...spec.model import BytesKey, LaneGraphSpecV1, RoleV1, StageV1
from ..registry import resolve_stage
from ..sharding import shard_of
from .plan import RolePlan

__all__ = [
    "DROP",
    "LaneGraphResult",
    "Router",
    "default_journal_dir",
    "default_lane_path",
    "oversize",
    "resolve_role_stage",
]

#: Default roots: lanes in shared memory, journals on a real filesystem.
SHM_ROOT = "/dev/shm/byteor"
JOURNAL_ROOT = "/var/tmp/byteor"


@dataclass
class LaneGraphResult:
    """What a LaneGraph run did: totals, drops per lane, and the final ``lane_graph_state`` dict."""

    messages_in: int = 0
    messages_out: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def _hash8(spec_hash: str) -> str:
    return spec_hash.split(":", 1)[-1][:8]


def default_lane_path(spec: LaneGraphSpecV1, spec_hash: str) -> str:
    """``/dev/shm/byteor/<name>-<hash8>/``, where the shared-memory lane files live."""
    return os.path.join(SHM_ROOT, f"{spec.name}-{_hash8(spec_hash)}")


def default_journal_dir(spec: LaneGraphSpecV1, spec_hash: str) -> str:
    """``$BYTEOR_JOURNAL_DIR/<name>-<hash8>``, else ``/var/tmp/byteor/<name>-<hash8>/journal``:
    journal lanes live on a real filesystem, not in /dev/shm."""
    base = os.environ.get("BYTEOR_JOURNAL_DIR")
    if base:
        return os.path.join(base, f"{spec.name}-{_hash8(spec_hash)}")
    return os.path.join(JOURNAL_ROOT, f"{spec.name}-{_hash8(spec_hash)}", "journal")


def journal_lane_dir(journal_dir: str, lane: str) -> Path:
    return Path(journal_dir) / lane


class Router:
    """Chooses the output of each message: round robin, or the runtime's stable shard hash of the
    ``bytes:<offset>:<len>`` window (:func:`byteor.runtime.sharding.shard_of`: CRC-32 modulo the
    number of outputs, the same in every process and run), so a key always takes the same output."""

    __slots__ = ("_key", "_len", "_n", "_next", "_offset")

    def __init__(self, role: RoleV1, n_outputs: int) -> None:
        self._n = n_outputs
        self._next = 0
        self._key = role.route if isinstance(role.route, BytesKey) else None
        self._offset = self._key.offset if self._key is not None else 0
        self._len = self._key.length if self._key is not None else 0

    def choose(self, msg: bytes | memoryview) -> int:
        if self._key is None:
            return self._next
        return shard_of(msg, self._offset, self._len, self._n)

    def delivered(self) -> None:
        """Advance round robin (called once the chosen output took or dropped the message)."""
        if self._key is None:
            self._next = (self._next + 1) % self._n


def resolve_role_stage(index: int, role: RoleV1, ctx: StageContext) -> ResolvedStage:
    """Resolve a stage role once, at startup, through the runtime's stage registry.

    A key that cannot be resolved is a :class:`~byteor.SpecError` naming
    ``pipeline.roles.<i>.resolver_key`` (exit 3), before anything runs; a policy refusal propagates.
    """
    stage = StageV1(id=role.name, op=role.op or "identity", delta=role.delta, resolver_key=role.resolver_key)
    try:
        return resolve_stage(stage, index, ctx)
    except SpecError as exc:
        issues = [
            SpecIssue(i.key.replace(f"pipeline.stages.{index}.", f"pipeline.roles.{index}.", 1),
                      i.message.replace(f"stage {role.name!r}", f"stage role {role.name!r}", 1), i.line)
            for i in exc.issues
        ]
        raise SpecError(issues) from None


def oversize(lane: str, n: int, slot_bytes: int) -> PipelineFailed:
    return PipelineFailed(f"message of {n} bytes exceeds lane {lane!r} slot_bytes={slot_bytes}")


def full(lane: str) -> PipelineFailed:
    return PipelineFailed(f"lane {lane!r} is full (on_full=fail): the pipeline stops")


def role_index(spec: LaneGraphSpecV1, role: RolePlan) -> int:
    return next(i for i, r in enumerate(spec.roles) if r.name == role.name)
