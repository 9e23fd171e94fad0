"""Result semantics of a SingleRing spec under concurrent (multi-process) execution (docs/runtime.md).

Whatever the executor, every stage sees, and the egress receives, exactly the bytes of running the
stages one after another in index order. A concurrent executor may overlap two stages only where that
cannot change what either sees, so besides its declared ``depends_on``:

* a stage that modifies the slot waits for every lower-index stage (nobody still reads the bytes it
  is about to change), and
* every stage waits for every lower-index stage that modifies the slot (it must see the change).

Read-only stages (identity, side-effect actions) with no such constraint between them run in
parallel. :func:`effective_deps` is what executors gate on; :func:`implicit_orderings` lists the edges
this adds beyond the declared ones (``lower_v2`` reports them as compile diagnostics).
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import SingleRingSpecV1

__all__ = ["ImplicitOrdering", "effective_deps", "implicit_orderings"]


@dataclass(frozen=True, slots=True)
class ImplicitOrdering:
    """Stage ``stage`` must wait for the lower-index stage ``after``; ``reason`` says which rule."""

    stage: int
    after: int
    reason: str


def effective_deps(spec: SingleRingSpecV1) -> tuple[frozenset[int], ...]:
    """For each stage index, the lower-index stages it must wait for (declared plus implicit)."""
    modifies = [st.modifies_slot for st in spec.stages]
    out: list[frozenset[int]] = []
    for i, st in enumerate(spec.stages):
        deps = {d for d in st.depends_on if 0 <= d < i}
        if modifies[i]:
            deps.update(range(i))
        deps.update(j for j in range(i) if modifies[j])
        out.append(frozenset(deps))
    return tuple(out)


def implicit_orderings(spec: SingleRingSpecV1) -> tuple[ImplicitOrdering, ...]:
    """The orderings :func:`effective_deps` adds to the declared dependencies, by stage then index."""
    out: list[ImplicitOrdering] = []
    for i, deps in enumerate(effective_deps(spec)):
        declared = set(spec.stages[i].depends_on)
        for j in sorted(deps - declared):
            if spec.stages[i].modifies_slot:
                reason = (f"stage {spec.stages[i].id!r} modifies the slot, so it waits for every "
                          f"earlier stage, including {spec.stages[j].id!r}")
            else:
                reason = (f"stage {spec.stages[i].id!r} must see the bytes written by earlier "
                          f"modifying stage {spec.stages[j].id!r}")
            out.append(ImplicitOrdering(i, j, reason))
    return tuple(out)
