"""What this build's executors can run: ``unsupported_reasons(spec)`` (empty list = runnable).

Used by the ``compatibility`` verb and by ``run`` before anything starts. SingleRing: every v1-valid
shape runs on ``--sp`` and on the multi-process executor when the native core is present. LaneGraph:
delegated to ``byteor.runtime.lanegraph.lanegraph_unsupported_reasons`` when that executor exists.
Resolver families that do not resolve are reported by the registry at startup (exit 3), not here.
"""

from __future__ import annotations

import importlib

from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1

__all__ = ["unsupported_reasons"]


def _native_missing() -> str | None:
    try:
        native = importlib.import_module("byteor._native")
    except ImportError as exc:
        return f"the native core byteor._native cannot be imported ({exc})"
    if not hasattr(native, "Ring"):
        return "the native core of this build has no shared-memory Ring"
    return None


def unsupported_reasons(spec: PipelineSpecV1, *, sp: bool = False) -> list[str]:
    """Why this build cannot run ``spec`` (``sp=True``: with the one-process executor)."""
    reasons: list[str] = []
    if isinstance(spec, SingleRingSpecV1):
        if spec.producer != "single":
            reasons.append(f"pipeline.constraints.producer={spec.producer} is not supported (only single)")
        if spec.scheduling != "dedicated":
            reasons.append(f"pipeline.constraints.scheduling={spec.scheduling} is not supported "
                           "(only dedicated)")
        if not sp:
            missing = _native_missing()
            if missing:
                reasons.append(f"multi-process execution needs {missing}; use --sp")
        return reasons
    if isinstance(spec, LaneGraphSpecV1):
        try:
            lanegraph = importlib.import_module("byteor.runtime.lanegraph")
        except ImportError:
            return ["LaneGraph execution is not supported by this build"]
        fn = getattr(lanegraph, "lanegraph_unsupported_reasons", None)
        if fn is None:
            return ["LaneGraph execution is not supported by this build"]
        return list(fn(spec))
    return [f"unknown spec type {type(spec).__name__}"]
