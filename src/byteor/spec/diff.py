"""Field-level semantic diff of two specs, by key, on their canonical forms.

Because both sides are canonicalized first, line order, comments, blank lines and omitted defaults
never show up as differences; only a real change of a field does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kv import canonical_pairs
from .model import PipelineSpecV1

__all__ = ["DiffEntry", "spec_diff"]


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """One differing key: ``old`` is None when only B has it, ``new`` None when only A has it."""

    key: str
    old: str | None
    new: str | None

    def lines(self) -> list[str]:
        out = []
        if self.old is not None:
            out.append(f"- {self.key}={self.old}")
        if self.new is not None:
            out.append(f"+ {self.key}={self.new}")
        return out

    def to_json(self) -> dict[str, str | None]:
        return {"key": self.key, "old": self.old, "new": self.new}


def spec_diff(a: PipelineSpecV1, b: PipelineSpecV1) -> list[DiffEntry]:
    """Every key whose canonical value differs between ``a`` and ``b``, in canonical key order
    (A's order first, then keys only B has, in B's order). Empty when the specs are equivalent."""
    pa, pb = dict(canonical_pairs(a)), dict(canonical_pairs(b))
    out = [DiffEntry(k, v, pb.get(k)) for k, v in pa.items() if pb.get(k) != v]
    out += [DiffEntry(k, None, v) for k, v in pb.items() if k not in pa]
    return out
