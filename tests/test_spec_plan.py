"""Plans and lowering, the compile report artifact, builders, result semantics, summary, DOT and diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byteor import ArtifactError, SpecError, SpecValidationError
from byteor.spec import (
    LaneGraphBuilder,
    SingleRingBuilder,
    decode_kv,
    effective_deps,
    encode_kv,
    implicit_orderings,
    load_spec_file,
    lower_v2,
    read_compile_report,
    single_ring_chain,
    spec_diff,
    spec_hash,
    spec_summary,
    to_dot,
    validate_v1,
)
from byteor.spec.model import BytesKey, LaneGraphSpecV1, SingleRingSpecV1, StageV1
from byteor.spec.plan import (
    CompileReportV1,
    LaneGraphPlanV2,
    PlanBoundaryV2,
    PlanConnectionV2,
    PlanLaneStageV2,
    PlanStageV2,
    SingleRingPlanV2,
    spec_from_json,
    spec_to_json,
)

ROOT = Path(__file__).resolve().parent.parent


def _diamond_out_of_order() -> SingleRingPlanV2:
    return SingleRingPlanV2(
        "diamond",
        [
            PlanStageV2("sink", after=["right", "left"]),
            PlanStageV2("right", "add_u8", 2, after=["src"]),
            PlanStageV2("left", "add_u8", after=["src"]),
            PlanStageV2("src"),
        ],
    )


def test_diamond_given_out_of_order_lowers_topologically() -> None:
    spec, report = lower_v2(_diamond_out_of_order())
    assert isinstance(spec, SingleRingSpecV1)
    assert [s.id for s in spec.stages] == ["src", "right", "left", "sink"]
    assert [s.depends_on for s in spec.stages] == [(), (0,), (0,), (1, 2)]
    assert spec.stages[1].delta == 2 and spec.stages[2].delta == 1
    assert validate_v1(spec) == []
    kinds = [d.kind for d in report.diagnostics]
    assert kinds[0] == "reorder"
    assert "default" in kinds and "constraint" in kinds
    implicit = report.of_kind("implicit_ordering")
    assert [d.subject for d in implicit] == ["pipeline.stages.2.depends_on"]
    assert "'right'" in implicit[0].message
    # Deterministic: the same plan lowers to the same bytes and report.
    spec2, report2 = lower_v2(_diamond_out_of_order())
    assert encode_kv(spec2) == encode_kv(spec) and report2 == report


def test_explicit_constraints_produce_no_default_diagnostics() -> None:
    plan = SingleRingPlanV2(
        "s",
        [PlanStageV2("a"), PlanStageV2("b", "add_u8", after=["a"])],
        shards=4,
        ordering="per_key",
        producer="single",
        scheduling="dedicated",
        shard_key="bytes:0:4",
        capacity=64,
        slot_bytes=32,
        ingress="in",
        egress="out",
    )
    spec, report = lower_v2(plan)
    assert isinstance(spec, SingleRingSpecV1)
    assert spec.shard_key == BytesKey(0, 4) and spec.capacity == 64
    assert report.of_kind("default") == [] and report.of_kind("constraint") == []


def test_sharded_plan_resolves_per_key_and_fails_without_a_shard_key() -> None:
    with pytest.raises(SpecValidationError) as err:
        lower_v2(SingleRingPlanV2("s", [PlanStageV2("a")], shards=2))
    assert "pipeline.constraints.shard_key" in {i.key for i in err.value.issues}


def test_non_identity_source_gets_dependencies() -> None:
    spec, report = lower_v2(SingleRingPlanV2("s", [PlanStageV2("a"), PlanStageV2("b", "add_u8")]))
    assert isinstance(spec, SingleRingSpecV1)
    assert spec.stages[1].depends_on == (0,)
    assert any(d.subject == "pipeline.stages.1.depends_on" for d in report.of_kind("constraint"))


@pytest.mark.parametrize(
    ("stages", "needle"),
    [
        ([PlanStageV2("a", after=["b"]), PlanStageV2("b", after=["a"])], "cycle"),
        ([PlanStageV2("a", after=["a"])], "depends on itself"),
        ([PlanStageV2("a", after=["ghost"])], "unknown stage 'ghost'"),
        ([PlanStageV2("a"), PlanStageV2("a")], "duplicate stage id 'a'"),
        ([], "at least one stage"),
    ],
)
def test_bad_single_ring_plans_name_the_stage(stages: list[PlanStageV2], needle: str) -> None:
    with pytest.raises(SpecError) as err:
        lower_v2(SingleRingPlanV2("s", stages))
    assert needle in str(err.value)
    assert err.value.exit_code == 3


def _graph_plan() -> LaneGraphPlanV2:
    return LaneGraphPlanV2(
        "g",
        boundaries=[
            PlanBoundaryV2("in", "ingress", kind="mpsc"),
            PlanBoundaryV2("out", "egress", on_full="drop_newest"),
        ],
        stages=[
            PlanLaneStageV2("parse"),
            PlanLaneStageV2("bump", "add_u8"),
            PlanLaneStageV2("tag", "add_u8", 2),
        ],
        connections=[
            PlanConnectionV2("in", "parse", kind="events"),
            PlanConnectionV2("parse", "bump", route="bytes:0:1"),
            PlanConnectionV2("parse", "tag"),
            PlanConnectionV2("bump", "out"),
            PlanConnectionV2("tag", "out"),
        ],
    )


def test_lane_graph_plan_inserts_bridge_router_and_merge() -> None:
    spec, report = lower_v2(_graph_plan())
    assert isinstance(spec, LaneGraphSpecV1)
    assert validate_v1(spec) == []
    roles = {r.name: r for r in spec.roles}
    assert roles["parse.bridge"].kind == "bridge" and roles["parse.bridge"].inputs == ("in",)
    assert roles["parse.router"].kind == "router" and roles["parse.router"].route == BytesKey(0, 1)
    assert roles["out.merge"].kind == "merge" and roles["out.merge"].outputs == ("out",)
    assert roles["tag"].delta == 2 and roles["bump"].delta == 1
    assert spec.lane("in") is not None and spec.lane("in").kind == "mpsc"  # type: ignore[union-attr]
    assert spec.lane_on_full("out") == "drop_newest"
    for kind, subject in (("bridge", "parse.bridge"), ("router", "parse.router"), ("merge", "out.merge")):
        assert [d.subject for d in report.of_kind(kind)] == [subject]
    assert "mpsc -> events" in report.of_kind("bridge")[0].message


def test_fanout_and_journal_intents_share_one_lane_and_mpsc_inputs_coalesce() -> None:
    plan = LaneGraphPlanV2(
        "g2",
        boundaries=[
            PlanBoundaryV2("in", "ingress"),
            PlanBoundaryV2("out", "egress", kind="mpsc"),
            PlanBoundaryV2("log", "egress", kind="journal"),
        ],
        stages=[PlanLaneStageV2("src"), PlanLaneStageV2("a"), PlanLaneStageV2("b")],
        connections=[
            PlanConnectionV2("in", "src"),
            PlanConnectionV2("src", "a", kind="fanout"),
            PlanConnectionV2("src", "b", kind="fanout"),
            PlanConnectionV2("a", "out"),
            PlanConnectionV2("b", "out"),
        ],
    )
    # log has no producer: that is a plan error naming the boundary.
    with pytest.raises(SpecError, match="'log' has no incoming connection"):
        lower_v2(plan)
    plan = LaneGraphPlanV2(plan.name, plan.boundaries[:2], plan.stages, plan.connections)
    spec, report = lower_v2(plan)
    assert isinstance(spec, LaneGraphSpecV1)
    fan = spec.lane("src.out")
    assert fan is not None and fan.kind == "fanout" and fan.fanout == 2
    assert {r.kind for r in spec.roles} == {"stage"}  # no router, no merge
    assert report.of_kind("merge") == [] and report.of_kind("router") == []
    assert [r.outputs for r in spec.roles if r.name in ("a", "b")] == [("out",), ("out",)]


def test_lane_graph_plan_errors() -> None:
    base = _graph_plan()
    cyc = LaneGraphPlanV2("c", base.boundaries, base.stages, [*base.connections, PlanConnectionV2("tag", "parse")])
    with pytest.raises(SpecError, match="cycle"):
        lower_v2(cyc)
    with pytest.raises(SpecError, match="unknown stage or boundary 'nope'"):
        lower_v2(
            LaneGraphPlanV2("c", base.boundaries, base.stages, [*base.connections, PlanConnectionV2("tag", "nope")])
        )
    with pytest.raises(SpecError, match="cannot be a target"):
        lower_v2(LaneGraphPlanV2("c", base.boundaries, base.stages, [*base.connections, PlanConnectionV2("tag", "in")]))


def test_compile_report_round_trip(tmp_path: Path) -> None:
    for plan in (_diamond_out_of_order(), _graph_plan()):
        spec, report = lower_v2(plan)
        path = tmp_path / "report.json"
        report.write(path)
        data = json.loads(path.read_text())
        assert set(data) >= {"spec", "diagnostics", "report_v", "spec_hash"}
        assert data["spec"]["target"] == spec.target
        back = read_compile_report(path)
        assert back == report
        assert spec_hash(back.spec) == data["spec_hash"]
        assert spec_from_json(spec_to_json(spec)) == spec


def test_compile_report_reader_rejects_bad_and_newer(tmp_path: Path) -> None:
    _spec, report = lower_v2(_diamond_out_of_order())
    good = report.to_json()
    path = tmp_path / "r.json"
    cases = [
        ({**good, "report_v": 2}, "newer than this build"),
        ({**good, "report_v": "1"}, "report_v"),
        ({k: v for k, v in good.items() if k != "diagnostics"}, "needs `spec` and `diagnostics`"),
        ({**good, "diagnostics": [{"kind": 1}]}, "diagnostics[0]"),
        ({**good, "spec_hash": "sha256:00"}, "does not match"),
        ({**good, "spec": {**good["spec"], "colour": "x"}}, "not a valid v1 spec"),
        ({**good, "spec": {**good["spec"], "name": "a\npipeline.x=1"}}, "line break"),
        ({**good, "spec": {**good["spec"], "name": True}}, "string or an integer"),
        ([], "JSON object"),
    ]
    for data, needle in cases:
        path.write_text(json.dumps(data))
        with pytest.raises(ArtifactError, match=needle.replace("[", r"\[").replace("(", r"\(")):
            read_compile_report(path)
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read"):
        read_compile_report(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        read_compile_report(tmp_path / "missing.json")
    assert isinstance(report, CompileReportV1)


def test_examples_plans_module() -> None:
    import importlib
    import sys

    sys.path.insert(0, str(ROOT))
    try:
        plans = importlib.import_module("examples.plans")
    finally:
        sys.path.remove(str(ROOT))
    spec, _ = lower_v2(plans.diamond)
    assert encode_kv(spec).count("pipeline.stages.") > 0 and validate_v1(spec) == []
    _, report = lower_v2(plans.fan_in_out())
    assert {d.kind for d in report.diagnostics} >= {"bridge", "router", "merge"}


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def test_single_ring_builder_equals_decoded_text() -> None:
    built = (
        SingleRingBuilder("chain")
        .capacity(1024)
        .slot_bytes(256)
        .stage("read")
        .stage("bump", op="add_u8", depends_on=["read"])
        .stage("emit", depends_on=["bump"])
        .build()
    )
    assert built == load_spec_file(ROOT / "examples" / "chain.kv")
    sharded = (
        SingleRingBuilder("sharded")
        .shards(4)
        .shard_key("bytes:0:4")
        .capacity(256)
        .stage("pass")
        .stage("bump", op="add_u8", delta=3, depends_on=[0])
        .build()
    )
    assert spec_hash(sharded) == spec_hash(load_spec_file(ROOT / "examples" / "sharded.kv"))


def test_builders_raise_with_every_issue() -> None:
    with pytest.raises(SpecValidationError) as err:
        SingleRingBuilder("x y").producer("mpmc").stage("a").stage("b", op="add_u8", depends_on=["zzz"]).build()
    keys = {i.key for i in err.value.issues}
    assert {"pipeline.name", "pipeline.constraints.producer", "pipeline.stages.1.depends_on.0"} <= keys
    with pytest.raises(SpecValidationError, match="bytes:<offset>:<len>"):
        SingleRingBuilder("x").shard_key("first-four")


def test_single_ring_chain() -> None:
    spec = single_ring_chain("c", "identity", ("add_u8", 5), "exec:/bin/cat")
    assert [(s.op, s.delta, s.resolver_key, s.depends_on) for s in spec.stages] == [
        ("identity", None, None, ()),
        ("add_u8", 5, None, (0,)),
        ("resolver", None, "exec:/bin/cat", (1,)),
    ]
    with pytest.raises(SpecValidationError):
        single_ring_chain("c", *["identity"] * 5)


def test_lane_graph_builder_equals_example() -> None:
    built = (
        LaneGraphBuilder("lanegraph")
        .lane("in", "events")
        .lane("bumped", "fanout", fanout=2)
        .lane("audit", "journal", segment_bytes=1048576)
        .ingress("src", "in")
        .egress("out", "bumped")
        .role("bump", "stage", inputs=["in"], outputs=["bumped"], op="add_u8")
        .role("to-journal", "bridge", inputs=["bumped"], outputs=["audit"])
        .build()
    )
    assert built == load_spec_file(ROOT / "examples" / "lanegraph.kv")
    with pytest.raises(SpecValidationError) as err:
        LaneGraphBuilder("g").on_full("explode").lane("a", "events").ingress("i", "a").build()
    assert {"pipeline.on_full", "pipeline.lanes.0"} <= {i.key for i in err.value.issues}


# --------------------------------------------------------------------------------------------------
# Semantics, summary, DOT, diff
# --------------------------------------------------------------------------------------------------


def test_effective_deps_follow_a2() -> None:
    spec = SingleRingSpecV1(
        "s",
        (
            StageV1("a"),  # 0 identity
            StageV1("b", depends_on=(0,)),  # 1 identity, reads only
            StageV1("c", "add_u8", 1, depends_on=(0,)),  # 2 modifies: waits for 0 and 1
            StageV1("d", "resolver", None, "http_post:https://h/x", (0,)),  # 3 action: must see 2's write
        ),
    )
    assert effective_deps(spec) == (frozenset(), frozenset({0}), frozenset({0, 1}), frozenset({0, 2}))
    assert [(o.stage, o.after) for o in implicit_orderings(spec)] == [(2, 1), (3, 2)]
    readonly = SingleRingSpecV1("r", (StageV1("a"), StageV1("b", depends_on=(0,)), StageV1("c", depends_on=(0,))))
    assert implicit_orderings(readonly) == ()


def test_summary_shapes() -> None:
    sr = spec_summary(load_spec_file(ROOT / "examples" / "diamond.kv"))
    assert list(sr)[:3] == ["model", "name", "hash"] and sr["model"] == "SingleRing" and "lane_graph" not in sr
    body = sr["single_ring"]
    assert body["stage_count"] == 4 and body["stage_ops"] == {"add_u8": 2, "identity": 2}
    assert body["stages"][3]["depends_on"] == [1, 2] and body["stages"][2]["delta"] == 2
    json.dumps(sr)
    lg = spec_summary(load_spec_file(ROOT / "examples" / "lanegraph.kv"))
    assert lg["model"] == "LaneGraph" and "single_ring" not in lg
    body = lg["lane_graph"]
    assert body["lane_kinds"] == {"events": 1, "fanout": 1, "journal": 1}
    assert body["role_kinds"] == {"stage": 1, "bridge": 1}
    assert body["endpoints"][0] == {"name": "src", "direction": "ingress", "lane": "in"}
    assert body["on_full"] == "block" and body["lanes"][1]["fanout"] == 2


def test_dot_is_deterministic_and_complete() -> None:
    diamond = load_spec_file(ROOT / "examples" / "diamond.kv")
    text = to_dot(diamond)
    assert text == to_dot(diamond) and text.startswith("// sha256:") and "digraph" in text
    assert '"s0" -> "s1";' in text and '"s1" -> "s2" [style=dashed' in text and '"s3" -> "out:egress";' in text
    lg = to_dot(load_spec_file(ROOT / "examples" / "lanegraph.kv"))
    assert '"ep:src" -> "lane:in";' in lg and '"role:to-journal" -> "lane:audit";' in lg
    assert "shape=cylinder" in lg
    quoted = to_dot(SingleRingSpecV1('we"ird', (StageV1('a"b'),)))
    assert '\\"' in quoted


def test_diff_ignores_order_and_defaults() -> None:
    a = decode_kv("pipeline.name=x\npipeline.target=SingleRing\npipeline.stages.0.id=a\n")
    b = decode_kv("pipeline.stages.0.id=a\npipeline.ring.capacity=1024\npipeline.target=SingleRing\npipeline.name=x\n")
    assert spec_diff(a, b) == []
    c = decode_kv(
        "pipeline.name=x\npipeline.target=SingleRing\npipeline.stages.0.id=a\npipeline.stages.1.id=b\n"
        "pipeline.ring.capacity=64\n"
    )
    lines = [ln for d in spec_diff(a, c) for ln in d.lines()]
    assert lines == [
        "- pipeline.ring.capacity=1024",
        "+ pipeline.ring.capacity=64",
        "+ pipeline.stages.1.id=b",
        "+ pipeline.stages.1.op=identity",
    ]
    assert [d.to_json() for d in spec_diff(c, a)][-1] == {
        "key": "pipeline.stages.1.op",
        "old": "identity",
        "new": None,
    }


def test_fanout_boundaries_get_a_width_from_their_readers() -> None:
    plan = LaneGraphPlanV2(
        "f",
        [
            PlanBoundaryV2("in", "ingress", kind="fanout"),
            PlanBoundaryV2("o1", "egress", kind="fanout"),
            PlanBoundaryV2("o2", "egress"),
        ],
        [PlanLaneStageV2("a"), PlanLaneStageV2("b", output_kind="journal")],
        [
            PlanConnectionV2("in", "a"),
            PlanConnectionV2("in", "b"),
            PlanConnectionV2("a", "o1"),
            PlanConnectionV2("b", "o2"),
        ],
    )
    spec, report = lower_v2(plan)
    assert isinstance(spec, LaneGraphSpecV1)
    assert spec.lane("in").fanout == 2 and spec.lane("o1").fanout == 1  # type: ignore[union-attr]
    assert spec.lane("b.out").kind == "journal"  # type: ignore[union-attr]
    assert [d.subject for d in report.of_kind("bridge")] == ["o2.bridge"]
    assert "journal -> events" in report.of_kind("bridge")[0].message


# --------------------------------------------------------------------------------------------------
# Properties: lowering never produces a spec that breaks validate_v1
# --------------------------------------------------------------------------------------------------

_KINDS = ["events", "mpsc", "fanout", "journal"]
_opt_kind = st.none() | st.sampled_from(_KINDS)


@st.composite
def _lane_graph_plans(draw: st.DrawFn) -> LaneGraphPlanV2:
    ins = [f"i{k}" for k in range(draw(st.integers(1, 2)))]
    outs = [f"o{k}" for k in range(draw(st.integers(1, 2)))]
    names = [f"s{k}" for k in range(draw(st.integers(1, 4)))]
    bounds = [PlanBoundaryV2(n, "ingress", kind=draw(st.sampled_from(_KINDS))) for n in ins]
    bounds += [PlanBoundaryV2(n, "egress", kind=draw(st.sampled_from(_KINDS))) for n in outs]
    stages = [
        PlanLaneStageV2(
            n, draw(st.sampled_from(["identity", "add_u8"])), input_kind=draw(_opt_kind), output_kind=draw(_opt_kind)
        )
        for n in names
    ]
    pairs: set[tuple[str, str]] = set()
    for i, s in enumerate(names):
        for src in draw(st.lists(st.sampled_from(ins + names[:i]), min_size=1, max_size=3, unique=True)):
            pairs.add((src, s))
    for s in names:
        if not any(a == s for a, _ in pairs):
            pairs.add((s, draw(st.sampled_from(outs))))
    for i in ins:
        if not any(a == i for a, _ in pairs):
            pairs.add((i, names[0]))
    for o in outs:
        if not any(b == o for _, b in pairs):
            pairs.add((draw(st.sampled_from(names)), o))
    conns = [PlanConnectionV2(a, b, kind=draw(_opt_kind)) for a, b in sorted(pairs)]
    return LaneGraphPlanV2("p", bounds, stages, draw(st.permutations(conns)))


@settings(max_examples=150, deadline=None)
@given(_lane_graph_plans())
def test_lane_graph_lowering_always_validates(plan: LaneGraphPlanV2) -> None:
    spec, report = lower_v2(plan)  # raises SpecValidationError if lowering built an invalid graph
    assert isinstance(spec, LaneGraphSpecV1)
    assert {r.name for r in spec.roles if r.kind == "stage"} == {s.name for s in plan.stages}
    inserted = {r.name for r in spec.roles if r.kind != "stage"}
    assert inserted == {d.subject for d in report.diagnostics if d.kind in ("bridge", "router", "merge")}


@st.composite
def _single_ring_plans(draw: st.DrawFn) -> SingleRingPlanV2:
    n = draw(st.integers(1, 4))
    stages = [
        PlanStageV2(
            f"s{i}",
            draw(st.sampled_from(["identity", "add_u8"])),
            after=tuple(draw(st.lists(st.sampled_from([f"s{j}" for j in range(i)]), unique=True))) if i else (),
        )
        for i in range(n)
    ]
    return SingleRingPlanV2("p", draw(st.permutations(stages)))


@settings(max_examples=150, deadline=None)
@given(_single_ring_plans())
def test_single_ring_lowering_keeps_every_dependency(plan: SingleRingPlanV2) -> None:
    spec, _ = lower_v2(plan)
    assert isinstance(spec, SingleRingSpecV1)
    index = {st_.id: i for i, st_ in enumerate(spec.stages)}
    for ps in plan.stages:
        for dep in ps.after:
            assert index[dep] < index[ps.id]
            assert index[dep] in spec.stages[index[ps.id]].depends_on
