"""What this build's executors can run: ``unsupported_reasons(spec)`` (empty list = runnable).

Used by the ``compatibility`` verb and by ``run`` before anything starts. SingleRing: every v1-valid
shape runs on ``--sp`` and on the multi-process executor when the native core is present. LaneGraph:
delegated to ``byteor.runtime.lanegraph.lanegraph_unsupported_reasons`` when that executor exists.
Resolver families that do not resolve are reported by the registry at startup (exit 3), not here.
"""

from __future__ import annotations

from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from .lanegraph.plan import lanegraph_unsupported_reasons

__all__ = ["unsupported_reasons"]


def unsupported_reasons(spec: PipelineSpecV1, *, sp: bool = False) -> list[str]:
    """Why this build cannot run ``spec`` (``sp=True``: with the one-process executor)."""
    reasons: list[str] = []
    if isinstance(spec, SingleRingSpecV1):
        if spec.producer != "single":
            reasons.append(f"pipeline.constraints.producer={spec.producer} is not supported (only single)")
        if spec.scheduling != "dedicated":
            reasons.append(f"pipeline.constraints.scheduling={spec.scheduling} is not supported "
                           "(only dedicated)")
        return reasons
    if isinstance(spec, LaneGraphSpecV1):
        return lanegraph_unsupported_reasons(spec)
    return [f"unknown spec type {type(spec).__name__}"]
