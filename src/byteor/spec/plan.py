"""PipelinePlanV2 (the source authoring contract) and ``lower_v2`` (plan -> spec + compile report).

A plan says *what* is wanted; lowering decides *how* and reports every decision it made:

* :class:`SingleRingPlanV2`: a stage DAG given in any order, dependencies by stage id, constraints
  optional. Lowering sorts the DAG topologically (stable: among ready stages the one declared first
  goes first), turns ids into indexes, resolves every unset constraint and default, makes a
  non-identity source stage placed after index 0 depend on the stages before it, and reports the
  implicit orderings of :mod:`byteor.spec.semantics`.
* :class:`LaneGraphPlanV2`: boundaries (ingress/egress lanes with their kind and policy), stages
  and connections between them with lane-kind intents, plus ``on_full``. Lowering creates the
  lanes and inserts a **router** where one producer feeds several consumers over events/mpsc
  lanes (by key or round robin), a **merge** where several producers feed one consumer that is not
  an mpsc lane, and a **bridge** where a connection crosses lane kinds (or joins two boundary lanes).
  Several single-output stages feeding one mpsc input write that lane directly (no merge).

Every decision is a :class:`CompileDiagnosticV1`; :class:`CompileReportV1` is the seed-001 compile
report (``{"spec", "diagnostics"}`` plus ``report_v`` and ``spec_hash``). The lowered spec is
validated with validate_v1. A cycle, an unknown stage or boundary, or a duplicate name in a plan is a
:class:`~byteor.SpecError` naming the stage.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._errors import ArtifactError, SpecError, SpecIssue
from .._fileio import write_text_atomic
from .builders import make_stage, parse_bytes_key
from .kv import _pairs, decode_kv, spec_hash
from .model import (
    DEFAULT_CAPACITY,
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SLOT_BYTES,
    MAX_FANOUT,
    BytesKey,
    EndpointV1,
    LaneGraphSpecV1,
    LaneV1,
    PipelineSpecV1,
    RoleV1,
    SingleRingSpecV1,
)
from .semantics import implicit_orderings
from .validate import check_v1

__all__ = [
    "COMPILE_REPORT_VERSION",
    "CompileDiagnosticV1",
    "CompileReportV1",
    "LaneGraphPlanV2",
    "PipelinePlanV2",
    "PlanBoundaryV2",
    "PlanConnectionV2",
    "PlanLaneStageV2",
    "PlanStageV2",
    "SingleRingPlanV2",
    "lower_v2",
    "read_compile_report",
    "spec_from_json",
    "spec_to_json",
]

COMPILE_REPORT_VERSION = 1

#: Diagnostic kinds, in the order a reader meets them.
DIAGNOSTIC_KINDS = ("default", "constraint", "reorder", "implicit_ordering", "lane", "router", "merge",
                    "bridge")


# --------------------------------------------------------------------------------------------------
# Plan model
# --------------------------------------------------------------------------------------------------


def _tuple(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, tuple):
        object.__setattr__(obj, name, tuple(value))


@dataclass(frozen=True)
class PlanStageV2:
    """A SingleRing plan stage; ``after`` names the stages (by id) it depends on."""

    id: str
    op: str = "identity"
    delta: int | None = None
    resolver_key: str | None = None
    after: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _tuple(self, "after")


@dataclass(frozen=True)
class SingleRingPlanV2:
    """A SingleRing plan: the stage DAG in any order; ``None`` constraints are resolved by lowering."""

    name: str
    stages: tuple[PlanStageV2, ...]
    shards: int | None = None
    ordering: str | None = None
    producer: str | None = None
    scheduling: str | None = None
    shard_key: str | BytesKey | None = None
    capacity: int | None = None
    slot_bytes: int | None = None
    ingress: str | None = None
    egress: str | None = None

    def __post_init__(self) -> None:
        _tuple(self, "stages")

    @property
    def target(self) -> str:
        return "SingleRing"


@dataclass(frozen=True)
class PlanBoundaryV2:
    """An ingress or egress boundary: its lane (kind, sizes) and that lane's ``on_full`` policy."""

    name: str
    direction: str
    kind: str = "events"
    capacity: int | None = None
    slot_bytes: int | None = None
    fanout: int | None = None
    segment_bytes: int | None = None
    on_full: str | None = None


@dataclass(frozen=True)
class PlanLaneStageV2:
    """A LaneGraph plan stage; ``input_kind``/``output_kind`` pin the lane kinds on its sides."""

    name: str
    op: str = "identity"
    delta: int | None = None
    resolver_key: str | None = None
    input_kind: str | None = None
    output_kind: str | None = None


@dataclass(frozen=True)
class PlanConnectionV2:
    """Messages flow from ``source`` to ``target`` (boundary or stage names) over a lane of ``kind``
    (the intent; ``None`` lets lowering choose). ``route`` picks a router's route when ``source``
    feeds several consumers: ``"round_robin"`` or ``"bytes:<offset>:<len>"``."""

    source: str
    target: str
    kind: str | None = None
    route: str | BytesKey | None = None


@dataclass(frozen=True)
class LaneGraphPlanV2:
    """A LaneGraph plan: boundaries, stages, connections with lane-kind intents, and policies."""

    name: str
    boundaries: tuple[PlanBoundaryV2, ...]
    stages: tuple[PlanLaneStageV2, ...]
    connections: tuple[PlanConnectionV2, ...]
    on_full: str | None = None
    capacity: int | None = None
    slot_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("boundaries", "stages", "connections"):
            _tuple(self, name)

    @property
    def target(self) -> str:
        return "LaneGraph"


#: A v2 plan is exactly one of these two.
PipelinePlanV2 = SingleRingPlanV2 | LaneGraphPlanV2


# --------------------------------------------------------------------------------------------------
# Compile report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileDiagnosticV1:
    """One lowering decision: ``kind`` (see ``DIAGNOSTIC_KINDS``), the ``subject`` it concerns (a spec
    key or a lane/role name) and a readable ``message``."""

    kind: str
    subject: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message}


@dataclass(frozen=True)
class CompileReportV1:
    """The compile report: the lowered spec and every diagnostic, in the order they were made."""

    spec: PipelineSpecV1
    diagnostics: tuple[CompileDiagnosticV1, ...] = field(default=())

    def of_kind(self, kind: str) -> list[CompileDiagnosticV1]:
        return [d for d in self.diagnostics if d.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "report_v": COMPILE_REPORT_VERSION,
            "spec_hash": spec_hash(self.spec),
            "spec": spec_to_json(self.spec),
            "diagnostics": [d.to_json() for d in self.diagnostics],
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the report as JSON (atomically: a temp file in the same directory, then rename)."""
        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n", make_dirs=True)


def spec_to_json(spec: PipelineSpecV1) -> dict[str, Any]:
    """The spec as JSON: the canonical KV keys nested by their dotted path (arrays as lists,
    integers as numbers), without the ``pipeline.`` root."""
    root: dict[str, Any] = {}
    for key, value in _pairs(spec):
        parts = key.split(".")[1:]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value if isinstance(value, int) else str(value)
    result: dict[str, Any] = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_listify(node[k]) for k in sorted(node, key=int)]
        return {k: _listify(v) for k, v in node.items()}
    return node


def spec_from_json(obj: object, *, where: str = "spec") -> PipelineSpecV1:
    """Read the JSON form of :func:`spec_to_json` back into a spec (through the KV decoder, so the
    same rules apply). Raises :class:`~byteor.ArtifactError` naming the problem."""
    if not isinstance(obj, dict):
        raise ArtifactError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    lines: list[str] = []

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        elif isinstance(node, bool) or not isinstance(node, int | str):
            raise ArtifactError(f"{where}: `{prefix}` must be a string or an integer, got {node!r}")
        else:
            text = str(node)
            if "\n" in text or "\r" in text or "\n" in prefix:
                raise ArtifactError(f"{where}: `{prefix}` contains a line break")
            lines.append(f"{prefix}={text}\n")

    walk("pipeline", obj)
    try:
        return decode_kv("".join(lines))
    except SpecError as exc:
        raise ArtifactError(f"{where}: not a valid v1 spec: {exc}") from None


def read_compile_report(path: str | os.PathLike[str]) -> CompileReportV1:
    """Read a compile report. Raises :class:`~byteor.ArtifactError` for a missing or malformed file
    and for a newer major version than this build reads."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ArtifactError(f"{p}: compile report does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{p}: cannot read compile report: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{p}: compile report must be a JSON object")
    version = data.get("report_v", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{p}: `report_v` must be a positive integer, got {version!r}")
    if version > COMPILE_REPORT_VERSION:
        raise ArtifactError(f"{p}: compile report version {version} is newer than this build reads "
                            f"({COMPILE_REPORT_VERSION}); upgrade byteor")
    if "spec" not in data or "diagnostics" not in data:
        raise ArtifactError(f"{p}: compile report needs `spec` and `diagnostics`")
    spec = spec_from_json(data["spec"], where=f"{p}: spec")
    raw = data["diagnostics"]
    if not isinstance(raw, list):
        raise ArtifactError(f"{p}: `diagnostics` must be a list")
    diags: list[CompileDiagnosticV1] = []
    for i, d in enumerate(raw):
        fields_ok = isinstance(d, dict) and all(isinstance(d.get(k), str)
                                                for k in ("kind", "subject", "message"))
        if not fields_ok:
            raise ArtifactError(f"{p}: `diagnostics[{i}]` needs string fields kind, subject, message")
        diags.append(CompileDiagnosticV1(d["kind"], d["subject"], d["message"]))
    recorded = data.get("spec_hash")
    if recorded is not None and recorded != spec_hash(spec):
        raise ArtifactError(f"{p}: `spec_hash` {recorded} does not match the spec ({spec_hash(spec)})")
    return CompileReportV1(spec, tuple(diags))


# --------------------------------------------------------------------------------------------------
# Lowering
# --------------------------------------------------------------------------------------------------


def lower_v2(plan: PipelinePlanV2) -> tuple[PipelineSpecV1, CompileReportV1]:
    """Lower a plan to a validated v1 spec and its compile report.

    Raises :class:`~byteor.SpecError` for a plan that cannot be lowered (cycle, unknown or duplicate
    stage, ...) and :class:`~byteor.SpecValidationError` if the lowered spec breaks validate_v1.
    """
    spec: PipelineSpecV1
    if isinstance(plan, SingleRingPlanV2):
        spec, diags = _lower_single_ring(plan)
    elif isinstance(plan, LaneGraphPlanV2):
        spec, diags = _lower_lane_graph(plan)
    else:
        raise SpecError(f"not a PipelinePlanV2: {type(plan).__name__}")
    check_v1(spec)
    return spec, CompileReportV1(spec, tuple(diags))


def _default(diags: list[CompileDiagnosticV1], key: str, value: Any, given: Any, why: str = "") -> Any:
    if given is not None:
        return given
    diags.append(CompileDiagnosticV1("default", key, f"{key} not set; using {value}{why}"))
    return value


def _toposort(names: list[str], deps: dict[str, list[str]], what: str) -> list[str]:
    """Stable Kahn sort: among ready nodes, the one declared first goes first. A cycle is a SpecError."""
    pos = {n: i for i, n in enumerate(names)}
    indeg = {n: len(set(deps[n])) for n in names}
    users: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for d in set(deps[n]):
            users[d].append(n)
    ready = [(pos[n], n) for n in names if indeg[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, (pos[u], u))
    if len(order) != len(names):
        stuck = [n for n in names if n not in set(order)]
        raise SpecError(SpecIssue(f"plan.stages.{pos[stuck[0]]}",
                                  f"dependency cycle among {what} {', '.join(repr(s) for s in stuck)}"))
    return order


def _lower_single_ring(plan: SingleRingPlanV2) -> tuple[SingleRingSpecV1, list[CompileDiagnosticV1]]:
    diags: list[CompileDiagnosticV1] = []
    issues: list[SpecIssue] = []
    ids: list[str] = []
    for i, st in enumerate(plan.stages):
        if not st.id:
            issues.append(SpecIssue(f"plan.stages.{i}.id", "stage id must be non-empty"))
        elif st.id in ids:
            issues.append(SpecIssue(f"plan.stages.{i}.id", f"duplicate stage id {st.id!r}"))
        ids.append(st.id)
    if not plan.stages:
        issues.append(SpecIssue("plan.stages", "a SingleRing plan needs at least one stage"))
    known = set(ids)
    for i, st in enumerate(plan.stages):
        for k, dep in enumerate(st.after):
            if dep not in known:
                issues.append(SpecIssue(f"plan.stages.{i}.after.{k}",
                                        f"stage {st.id!r} depends on unknown stage {dep!r}"))
            elif dep == st.id:
                issues.append(SpecIssue(f"plan.stages.{i}.after.{k}", f"stage {st.id!r} depends on itself"))
    if issues:
        raise SpecError(issues)
    by_id = {st.id: st for st in plan.stages}
    order = _toposort(ids, {st.id: list(st.after) for st in plan.stages}, "stages")
    if order != ids:
        diags.append(CompileDiagnosticV1("reorder", "pipeline.stages",
                                         f"stages sorted topologically: {' -> '.join(order)} "
                                         f"(declared {', '.join(ids)})"))
    index = {sid: i for i, sid in enumerate(order)}
    stages = []
    for i, sid in enumerate(order):
        st = by_id[sid]
        deps = sorted({index[d] for d in st.after})
        if i > 0 and st.op != "identity" and not deps:
            deps = list(range(i))
            diags.append(CompileDiagnosticV1(
                "constraint", f"pipeline.stages.{i}.depends_on",
                f"source stage {sid!r} ({st.op}) sorted to index {i}; it now depends on every earlier "
                "stage, as v1 requires a non-first modifying stage to declare its dependencies"))
        stages.append(make_stage(sid, st.op, st.delta, st.resolver_key, deps))

    shards = _default(diags, "pipeline.constraints.shards", 1, plan.shards)
    if plan.ordering is None:
        ordering = "strict" if shards == 1 else "per_key"
        diags.append(CompileDiagnosticV1("constraint", "pipeline.constraints.ordering",
                                         f"ordering not set; using {ordering} because shards={shards}"))
    else:
        ordering = plan.ordering
    shard_key = parse_bytes_key(plan.shard_key, key="pipeline.constraints.shard_key")
    if plan.shard_key is None:
        diags.append(CompileDiagnosticV1("default", "pipeline.constraints.shard_key",
                                         "pipeline.constraints.shard_key not set; using none"))
    spec = SingleRingSpecV1(
        name=plan.name,
        stages=tuple(stages),
        shards=shards,
        ordering=ordering,
        producer=_default(diags, "pipeline.constraints.producer", "single", plan.producer),
        scheduling=_default(diags, "pipeline.constraints.scheduling", "dedicated", plan.scheduling),
        shard_key=shard_key,
        capacity=_default(diags, "pipeline.ring.capacity", DEFAULT_CAPACITY, plan.capacity),
        slot_bytes=_default(diags, "pipeline.ring.slot_bytes", DEFAULT_SLOT_BYTES, plan.slot_bytes),
        ingress=_default(diags, "pipeline.ingress", "ingress", plan.ingress),
        egress=_default(diags, "pipeline.egress", "egress", plan.egress),
    )
    if not check_is_valid_shape(spec):
        return spec, diags  # lower_v2's check_v1 reports every issue
    for o in implicit_orderings(spec):
        diags.append(CompileDiagnosticV1("implicit_ordering", f"pipeline.stages.{o.stage}.depends_on",
                                         f"stage {o.stage} waits for stage {o.after}: {o.reason}"))
    return spec, diags


def check_is_valid_shape(spec: SingleRingSpecV1) -> bool:
    """Whether the stage list is sound enough to compute implicit orderings on."""
    return all(all(isinstance(d, int) and 0 <= d < i for d in st.depends_on)
               for i, st in enumerate(spec.stages))


class _LaneGraphLowering:
    def __init__(self, plan: LaneGraphPlanV2) -> None:
        self.plan = plan
        self.diags: list[CompileDiagnosticV1] = []
        self.lanes: dict[str, LaneV1] = {}
        self.role_names: set[str] = set()
        self.inserted: list[RoleV1] = []
        self.capacity = _default(self.diags, "plan.capacity", DEFAULT_CAPACITY, plan.capacity,
                                 " for lanes lowering creates")
        self.slot_bytes = _default(self.diags, "plan.slot_bytes", DEFAULT_SLOT_BYTES, plan.slot_bytes,
                                   " for lanes lowering creates")

    def diag(self, kind: str, subject: str, message: str) -> None:
        self.diags.append(CompileDiagnosticV1(kind, subject, message))

    def unique(self, base: str, taken: Iterable[str]) -> str:
        used = set(taken)
        if base not in used:
            return base
        n = 2
        while f"{base}.{n}" in used:
            n += 1
        return f"{base}.{n}"

    def new_lane(self, base: str, kind: str, *, fanout: int | None = None) -> str:
        name = self.unique(base, self.lanes)
        self.lanes[name] = LaneV1(
            name, kind,
            capacity=None if kind == "journal" else self.capacity,
            slot_bytes=self.slot_bytes,
            fanout=fanout if kind == "fanout" else None,
            segment_bytes=DEFAULT_SEGMENT_BYTES if kind == "journal" else None,
        )
        self.diag("lane", name, f"created {kind} lane {name!r}")
        return name

    def set_fanout(self, lane_name: str, width: int) -> None:
        lane = self.lanes[lane_name]
        if lane.fanout is None:
            self.lanes[lane_name] = LaneV1(lane.name, lane.kind, lane.capacity, lane.slot_bytes, width,
                                           lane.segment_bytes, lane.on_full)

    def new_role(self, base: str, kind: str, inputs: list[str], outputs: list[str],
                 route: str | BytesKey | None = None) -> str:
        name = self.unique(base, self.role_names)
        self.role_names.add(name)
        self.inserted.append(RoleV1(name, kind, tuple(inputs), tuple(outputs), route=route))
        return name


def _lower_lane_graph(plan: LaneGraphPlanV2) -> tuple[LaneGraphSpecV1, list[CompileDiagnosticV1]]:
    low = _LaneGraphLowering(plan)
    issues: list[SpecIssue] = []
    kind_of: dict[str, str] = {}  # node name -> "ingress" | "egress" | "stage"
    boundary: dict[str, PlanBoundaryV2] = {}
    stage: dict[str, PlanLaneStageV2] = {}
    for i, b in enumerate(plan.boundaries):
        key = f"plan.boundaries.{i}"
        if b.direction not in ("ingress", "egress"):
            issues.append(SpecIssue(f"{key}.direction", f"expected ingress|egress, got {b.direction!r}"))
        if not b.name or b.name in kind_of:
            issues.append(SpecIssue(f"{key}.name", f"boundary name {b.name!r} is empty or already used"))
            continue
        kind_of[b.name] = b.direction
        boundary[b.name] = b
    for i, s in enumerate(plan.stages):
        if not s.name or s.name in kind_of:
            issues.append(SpecIssue(f"plan.stages.{i}.name",
                                    f"stage name {s.name!r} is empty or already used"))
            continue
        kind_of[s.name] = "stage"
        stage[s.name] = s
    outs: dict[str, list[PlanConnectionV2]] = {n: [] for n in kind_of}
    ins: dict[str, list[PlanConnectionV2]] = {n: [] for n in kind_of}
    seen_pairs: set[tuple[str, str]] = set()
    for i, c in enumerate(plan.connections):
        key = f"plan.connections.{i}"
        if c.source not in kind_of:
            issues.append(SpecIssue(f"{key}.source", f"unknown stage or boundary {c.source!r}"))
        elif kind_of[c.source] == "egress":
            issues.append(SpecIssue(f"{key}.source", f"egress boundary {c.source!r} cannot be a source"))
        if c.target not in kind_of:
            issues.append(SpecIssue(f"{key}.target", f"unknown stage or boundary {c.target!r}"))
        elif kind_of[c.target] == "ingress":
            issues.append(SpecIssue(f"{key}.target", f"ingress boundary {c.target!r} cannot be a target"))
        if c.source == c.target:
            issues.append(SpecIssue(key, f"stage {c.source!r} is connected to itself (a cycle)"))
        if (c.source, c.target) in seen_pairs:
            issues.append(SpecIssue(key, f"duplicate connection {c.source!r} -> {c.target!r}"))
        seen_pairs.add((c.source, c.target))
        if c.source in outs and c.target in ins and kind_of.get(c.source) != "egress" \
                and kind_of.get(c.target) != "ingress":
            outs[c.source].append(c)
            ins[c.target].append(c)
    for name, kind in kind_of.items():
        if kind in ("ingress", "stage") and not outs[name]:
            issues.append(SpecIssue(f"plan.{'stages' if kind == 'stage' else 'boundaries'}",
                                    f"{kind} {name!r} has no outgoing connection"))
        if kind in ("egress", "stage") and not ins[name]:
            issues.append(SpecIssue(f"plan.{'stages' if kind == 'stage' else 'boundaries'}",
                                    f"{kind} {name!r} has no incoming connection"))
    if not any(k == "ingress" for k in kind_of.values()):
        issues.append(SpecIssue("plan.boundaries", "a LaneGraph plan needs an ingress boundary"))
    if issues:
        raise SpecError(issues)
    stage_names = [s.name for s in plan.stages]
    order = _toposort(stage_names, {n: [c.source for c in ins[n] if kind_of[c.source] == "stage"]
                                    for n in stage_names}, "stages")

    on_full = _default(low.diags, "pipeline.on_full", "block", plan.on_full)
    for b in plan.boundaries:
        low.lanes[b.name] = LaneV1(
            b.name, b.kind,
            capacity=None if b.kind == "journal" else (low.capacity if b.capacity is None else b.capacity),
            slot_bytes=low.slot_bytes if b.slot_bytes is None else b.slot_bytes,
            fanout=b.fanout if b.kind == "fanout" else None,
            segment_bytes=(DEFAULT_SEGMENT_BYTES if b.segment_bytes is None else b.segment_bytes)
            if b.kind == "journal" else None,
            on_full=b.on_full,
        )
    low.role_names.update(stage_names)

    # mpsc coalescing: single-output stages feeding one mpsc input share that lane.
    coalesced: dict[str, str] = {}
    for cname in [*order, *(b.name for b in plan.boundaries if b.direction == "egress")]:
        conns = ins[cname]
        if len(conns) < 2:
            continue
        if kind_of[cname] == "egress":
            wants = boundary[cname].kind == "mpsc"
        else:
            want = stage[cname].input_kind
            wants = want == "mpsc" or (want is None and all(c.kind == "mpsc" for c in conns))
        if not wants or not all(kind_of[c.source] == "stage" and len(outs[c.source]) == 1
                                and stage[c.source].output_kind in (None, "mpsc") for c in conns):
            continue
        lane_name = cname if kind_of[cname] == "egress" else low.new_lane(f"{cname}.in", "mpsc")
        coalesced[cname] = lane_name
        low.diag("lane", lane_name, f"{', '.join(repr(c.source) for c in conns)} write mpsc lane "
                                    f"{lane_name!r} into {cname!r} directly (no merge)")

    delivery: dict[tuple[str, str], str] = {}
    stage_out: dict[str, str] = {}
    producers = [b.name for b in plan.boundaries if b.direction == "ingress"] + order
    for pname in producers:
        conns = outs[pname]
        if kind_of[pname] == "stage" and len(conns) == 1 and conns[0].target in coalesced:
            stage_out[pname] = delivery[(pname, conns[0].target)] = coalesced[conns[0].target]
            continue
        if kind_of[pname] == "ingress":
            lane_name = pname
        else:
            s = stage[pname]
            kinds = {c.kind for c in conns}
            if s.output_kind is not None:
                want = s.output_kind
            elif len(conns) == 1:
                tgt = conns[0].target
                want = conns[0].kind or (boundary[tgt].kind if kind_of[tgt] == "egress"
                                         else stage[tgt].input_kind) or "events"
            elif kinds == {"fanout"}:
                want = "fanout"
            elif kinds == {"journal"}:
                want = "journal"
            else:
                want = "events"
            tgt = conns[0].target
            if len(conns) == 1 and kind_of[tgt] == "egress" and boundary[tgt].kind == want \
                    and len(ins[tgt]) == 1:
                lane_name = tgt
            else:
                lane_name = low.new_lane(f"{pname}.out", want)
            stage_out[pname] = lane_name
        lane = low.lanes[lane_name]
        if lane.kind in ("fanout", "journal"):
            if lane.kind == "fanout":
                if len(conns) > MAX_FANOUT:
                    raise SpecError(SpecIssue(f"plan.stages.{pname}",
                                              f"{pname!r} fans out to {len(conns)} consumers; a fanout "
                                              f"lane has at most {MAX_FANOUT}"))
                low.set_fanout(lane_name, len(conns))
            for c in conns:
                delivery[(pname, c.target)] = lane_name
        elif len(conns) == 1:
            delivery[(pname, conns[0].target)] = lane_name
        else:
            routes = {str(c.route) for c in conns if c.route is not None}
            if len(routes) > 1:
                raise SpecError(SpecIssue(f"plan.connections.{pname}",
                                          f"connections from {pname!r} ask for different routes: "
                                          f"{', '.join(sorted(routes))}"))
            route_text = routes.pop() if routes else "round_robin"
            route: str | BytesKey | None = route_text if route_text == "round_robin" else \
                parse_bytes_key(route_text, key=f"plan.connections.{pname}.route")
            outputs = []
            for c in conns:
                tgt_kind = (boundary[c.target].kind if kind_of[c.target] == "egress"
                            else stage[c.target].input_kind)
                k = c.kind or tgt_kind or "events"
                if kind_of[c.target] == "egress" and k == tgt_kind and len(ins[c.target]) == 1:
                    out = c.target  # the router writes the egress lane itself
                else:
                    out = low.new_lane(f"{pname}.to.{c.target}", k, fanout=1)
                delivery[(pname, c.target)] = out
                outputs.append(out)
            rname = low.new_role(f"{pname}.router", "router", [lane_name], outputs, route=route)
            low.diag("router", rname,
                     f"{pname!r} feeds {len(conns)} consumers ({', '.join(c.target for c in conns)}) over "
                     f"{lane.kind} lanes: inserted router {rname!r} (route {route})")

    stage_in: dict[str, str] = {}
    for cname in [*order, *(b.name for b in plan.boundaries if b.direction == "egress")]:
        if cname in coalesced:
            stage_in[cname] = coalesced[cname]
            continue
        conns = ins[cname]
        lanes_in = [delivery[(c.source, cname)] for c in conns]
        is_egress = kind_of[cname] == "egress"
        want_in: str | None = (boundary[cname].kind if is_egress
                               else stage[cname].input_kind or (conns[0].kind if len(conns) == 1 else None))
        if len(lanes_in) == 1:
            d = lanes_in[0]
            d_kind = low.lanes[d].kind
            if is_egress and d == cname:
                continue
            if not is_egress and (want_in is None or want_in == d_kind):
                stage_in[cname] = d
                continue
            out = cname if is_egress else low.new_lane(f"{cname}.in", want_in or "events", fanout=1)
            bname = low.new_role(f"{cname}.bridge", "bridge", [d], [out])
            out_kind = low.lanes[out].kind
            why = (f"crosses lane kinds {d_kind} -> {out_kind}" if d_kind != out_kind
                   else f"joins lane {d!r} to boundary lane {out!r}")
            low.diag("bridge", bname, f"connection {conns[0].source!r} -> {cname!r} {why}: inserted "
                                      f"bridge {bname!r}")
            if not is_egress:
                stage_in[cname] = out
        else:
            out = cname if is_egress else low.new_lane(f"{cname}.in", want_in or "events", fanout=1)
            mname = low.new_role(f"{cname}.merge", "merge", lanes_in, [out])
            low.diag("merge", mname,
                     f"{len(conns)} producers ({', '.join(c.source for c in conns)}) feed {cname!r}, whose "
                     f"input lane is {low.lanes[out].kind}, not mpsc: inserted merge {mname!r}")
            if not is_egress:
                stage_in[cname] = out

    roles = [
        RoleV1(name, "stage", (stage_in[name],), (stage_out[name],), stage[name].op,
               1 if stage[name].op == "add_u8" and stage[name].delta is None else stage[name].delta,
               stage[name].resolver_key)
        for name in order
    ]
    endpoints = [EndpointV1(b.name, b.direction, b.name) for b in plan.boundaries]
    # A fanout boundary lane without an explicit width gets one subscriber per reader.
    for name, lane in list(low.lanes.items()):
        if lane.kind == "fanout" and lane.fanout is None:
            readers = sum(name in r.inputs for r in [*roles, *low.inserted])
            readers += sum(ep.lane == name and ep.direction == "egress" for ep in endpoints)
            low.set_fanout(name, max(1, readers))
            low.diag("default", name, f"fanout lane {name!r} has no width set; using {max(1, readers)} "
                                      "(its number of readers)")
    spec = LaneGraphSpecV1(plan.name, tuple(low.lanes.values()), tuple(endpoints),
                           tuple(roles + low.inserted), on_full)
    return spec, low.diags
