"""Pipeline plans written in Python, lowered with ``byteor compile``::

    byteor compile examples.plans:diamond --out diamond.kv --report diamond-report.json
    byteor compile examples.plans:fan_in_out --out graph.kv --report graph-report.json

``diamond`` is a SingleRing stage DAG declared out of order; ``fan_in_out`` is a LaneGraph plan whose
lowering inserts a bridge (mpsc ingress -> events), a router (by the first byte) and a merge.
"""

from __future__ import annotations

from byteor.spec.plan import (
    LaneGraphPlanV2,
    PlanBoundaryV2,
    PlanConnectionV2,
    PlanLaneStageV2,
    PlanStageV2,
    SingleRingPlanV2,
)

#: src feeds two add_u8 branches that join in sink; declared sink-first on purpose.
diamond = SingleRingPlanV2(
    name="diamond",
    stages=(
        PlanStageV2("sink", after=("left", "right")),
        PlanStageV2("right", op="add_u8", delta=2, after=("src",)),
        PlanStageV2("left", op="add_u8", delta=1, after=("src",)),
        PlanStageV2("src"),
    ),
    capacity=1024,
    slot_bytes=256,
)


def fan_in_out() -> LaneGraphPlanV2:
    """Many writers -> parse -> (routed by byte 0) bump | tag -> one egress."""
    return LaneGraphPlanV2(
        name="fan-in-out",
        boundaries=(
            PlanBoundaryV2("in", "ingress", kind="mpsc"),
            PlanBoundaryV2("out", "egress", kind="events", on_full="drop_newest"),
        ),
        stages=(
            PlanLaneStageV2("parse"),
            PlanLaneStageV2("bump", op="add_u8", delta=1),
            PlanLaneStageV2("tag", op="add_u8", delta=2),
        ),
        connections=(
            PlanConnectionV2("in", "parse", kind="events"),
            PlanConnectionV2("parse", "bump", route="bytes:0:1"),
            PlanConnectionV2("parse", "tag", route="bytes:0:1"),
            PlanConnectionV2("bump", "out"),
            PlanConnectionV2("tag", "out"),
        ),
        on_full="block",
        capacity=256,
    )
