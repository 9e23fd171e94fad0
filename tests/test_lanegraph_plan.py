"""A LaneGraph authored as a PipelinePlanV2: lowering inserts a bridge, a router and a merge, and
the lowered graph runs (SP and multi-process) and delivers every message with the right bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from byteor.spec.model import LaneGraphSpecV1
from byteor.spec.plan import (
    LaneGraphPlanV2,
    PlanBoundaryV2,
    PlanConnectionV2,
    PlanLaneStageV2,
    lower_v2,
)
from lanegraph_helpers import run


def _plan() -> LaneGraphPlanV2:
    return LaneGraphPlanV2(
        name="planned",
        boundaries=(PlanBoundaryV2("in", "ingress", kind="mpsc"),
                    PlanBoundaryV2("out", "egress", kind="events")),
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
        capacity=64,
    )


@pytest.mark.parametrize("runner", ["sp", "mp"])
def test_plan_with_inserted_router_and_merge_delivers_everything(runner: str, tmp_path: Path) -> None:
    spec, report = lower_v2(_plan())
    assert isinstance(spec, LaneGraphSpecV1)
    kinds = {d.kind for d in report.diagnostics}
    assert {"router", "merge", "bridge"} <= kinds
    assert {r.kind for r in spec.roles} == {"stage", "router", "merge", "bridge"}
    data = [bytes([k]) + i.to_bytes(4, "little") for i in range(2000) for k in range(4)]
    got, result = run(spec, runner, data, tmp_path)
    out = got["out"]
    assert len(out) == len(data) and result.messages_out == len(data)
    # every message went through exactly one branch: bump (+1) or tag (+2), chosen by its first byte,
    # the same branch for every message of a key, and each key's order is kept end to end
    seen = set(out)
    for k in range(4):
        keyed = [m for m in data if m[0] == k]
        branches = [d for d in (1, 2) if all(plus(m, d) in seen for m in keyed)]
        assert len(branches) == 1, f"key {k}: branches {branches}"
        expected = [plus(m, branches[0]) for m in keyed]
        wanted = set(expected)
        assert [m for m in out if m in wanted] == expected


def plus(msg: bytes, delta: int) -> bytes:
    return bytes((b + delta) & 0xFF for b in msg)
