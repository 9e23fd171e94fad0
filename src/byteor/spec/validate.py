"""validate_v1: every validation rule of docs/spec.md, all problems reported at once, each with its exact key.

The decoder (:mod:`byteor.spec.kv`) already guarantees value *types* and key applicability for text
input; this module checks the rules, and also re-checks domains and applicability so that a spec
built in Python (builders, plans, hand-made dataclasses) is held to exactly the same standard.

Each issue names the key it concerns, e.g. ``pipeline.stages.2.depends_on.0``,
``pipeline.constraints.producer`` or, for a rule about a whole element, ``pipeline.lanes.1``.
"""

from __future__ import annotations

import re
from collections import defaultdict

from .._errors import SpecIssue, SpecValidationError
from .families import check_resolver_key
from .model import (
    DEFAULT_SEGMENT_BYTES,
    ENDPOINT_DIRECTIONS,
    LANE_KINDS,
    MAX_FANOUT,
    MAX_STAGES,
    ON_FULL,
    ORDERINGS,
    PRODUCERS,
    ROLE_KINDS,
    SCHEDULINGS,
    STAGE_OPS,
    BytesKey,
    LaneGraphSpecV1,
    PipelineSpecV1,
    SingleRingSpecV1,
)

__all__ = ["MIN_SEGMENT_BYTES", "NAME_RE", "check_v1", "is_power_of_two", "validate_v1"]

#: ``pipeline.name``: non-empty, letters, digits, ``.``, ``_`` and ``-``.
NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
#: The smallest journal segment accepted (one page); a segment must also hold one record.
MIN_SEGMENT_BYTES = 4096
#: A journal segment's header (128 bytes) plus one record header (16 bytes: length, flags, checksum,
#: reserved): what a segment needs beyond one padded payload (docs/lanegraph.md, format 2).
_JOURNAL_RECORD_OVERHEAD = 128 + 16


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def check_v1(spec: PipelineSpecV1, *, path: str | None = None) -> None:
    """Raise :class:`~byteor.SpecValidationError` listing every validate_v1 issue of ``spec``."""
    issues = validate_v1(spec)
    if issues:
        raise SpecValidationError(issues, path=path)


def validate_v1(spec: PipelineSpecV1) -> list[SpecIssue]:
    """Every validate_v1 problem of ``spec`` (empty when valid), in key order."""
    v = _Validator()
    v.common(spec)
    if isinstance(spec, SingleRingSpecV1):
        v.single_ring(spec)
    elif isinstance(spec, LaneGraphSpecV1):
        v.lane_graph(spec)
    else:  # a foreign object: fail closed rather than guess
        v.bad("pipeline.target", f"not a v1 spec: {type(spec).__name__}")
    return v.issues


class _Validator:
    def __init__(self) -> None:
        self.issues: list[SpecIssue] = []

    def bad(self, key: str, message: str) -> None:
        self.issues.append(SpecIssue(key, message))

    def enum(self, key: str, value: object, choices: tuple[str, ...]) -> bool:
        if value not in choices:
            self.bad(key, f"expected one of {'|'.join(choices)}, got {value!r}")
            return False
        return True

    def name(self, key: str, value: object, what: str) -> None:
        if not isinstance(value, str) or value == "":
            self.bad(key, f"{what} must be non-empty")

    def unique_name(self, array: str, i: int, value: object, what: str, seen: dict[str, int]) -> None:
        """``pipeline.<array>.<i>.name`` is non-empty and not used by an earlier element of the array."""
        key = f"pipeline.{array}.{i}.name"
        self.name(key, value, f"{what} name")
        if not isinstance(value, str) or not value:
            return
        if value in seen:
            self.bad(key, f"duplicate {what} name {value!r} (first at pipeline.{array}.{seen[value]}.name)")
        else:
            seen[value] = i

    def common(self, spec: PipelineSpecV1) -> None:
        name = getattr(spec, "name", None)
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            self.bad("pipeline.name", f"pipeline name must be non-empty [A-Za-z0-9._-]+, got {name!r}")

    # -- stage op fields (SingleRing stages and LaneGraph stage roles) ------------------------------

    def op_fields(self, prefix: str, op: object, delta: object, resolver_key: object) -> None:
        if not self.enum(f"{prefix}.op", op, STAGE_OPS):
            return
        if op == "add_u8":
            if delta is not None and (not isinstance(delta, int) or not 0 <= delta <= 255):
                self.bad(f"{prefix}.delta", f"delta must be an integer 0..255, got {delta!r}")
        elif delta is not None:
            self.bad(f"{prefix}.delta", f"key does not apply to op {op}")
        if op == "resolver":
            why = check_resolver_key(resolver_key if isinstance(resolver_key, str) else None)
            if why is not None:
                self.bad(f"{prefix}.resolver_key", why)
        elif resolver_key is not None:
            self.bad(f"{prefix}.resolver_key", f"key does not apply to op {op}")

    def bytes_key(self, key: str, value: BytesKey, what: str) -> None:
        if value.length < 1:
            self.bad(key, f"{what} bytes:{value.offset}:{value.length} has length 0; it must be >= 1")

    # -- SingleRing --------------------------------------------------------------------------------

    def single_ring(self, spec: SingleRingSpecV1) -> None:
        c = "pipeline.constraints"
        if not isinstance(spec.shards, int) or spec.shards < 1:
            self.bad(f"{c}.shards", f"shards must be >= 1, got {spec.shards!r}")
        ordering_ok = self.enum(f"{c}.ordering", spec.ordering, ORDERINGS)
        if self.enum(f"{c}.producer", spec.producer, PRODUCERS) and spec.producer == "mpmc":
            self.bad(f"{c}.producer", "producer=mpmc is not supported in v1 (only single)")
        if self.enum(f"{c}.scheduling", spec.scheduling, SCHEDULINGS) and spec.scheduling == "work_queue":
            self.bad(f"{c}.scheduling", "scheduling=work_queue is not supported in v1 (only dedicated)")
        if ordering_ok and spec.ordering == "strict" and isinstance(spec.shards, int) and spec.shards > 1:
            self.bad(f"{c}.ordering", f"ordering=strict cannot hold across {spec.shards} shards; "
                                      "use per_key (with a shard_key) or unordered")
        if spec.shard_key is not None:
            self.bytes_key(f"{c}.shard_key", spec.shard_key, "shard_key")
        elif ordering_ok and spec.ordering == "per_key":
            self.bad(f"{c}.shard_key", "ordering=per_key needs a shard_key (bytes:<offset>:<len>)")
        if not isinstance(spec.capacity, int) or spec.capacity < 2 or not is_power_of_two(spec.capacity):
            self.bad("pipeline.ring.capacity", f"capacity must be a power of two >= 2, got {spec.capacity!r}")
        if not isinstance(spec.slot_bytes, int) or spec.slot_bytes < 1:
            self.bad("pipeline.ring.slot_bytes", f"slot_bytes must be >= 1, got {spec.slot_bytes!r}")
        self.name("pipeline.ingress", spec.ingress, "ingress boundary name")
        self.name("pipeline.egress", spec.egress, "egress boundary name")

        stages = spec.stages
        if not stages:
            self.bad("pipeline.stages", "a SingleRing spec needs at least one stage")
        elif len(stages) > MAX_STAGES:
            self.bad(f"pipeline.stages.{MAX_STAGES}",
                     f"{len(stages)} stages; a v1 ring supports at most {MAX_STAGES} "
                     "(SEQUENCED_SLOTS_V1_GATING)")
        first_with_id: dict[str, int] = {}
        for i, st in enumerate(stages):
            p = f"pipeline.stages.{i}"
            if not isinstance(st.id, str) or st.id == "":
                self.bad(f"{p}.id", "stage id must be non-empty")
            elif st.id in first_with_id:
                self.bad(f"{p}.id", f"duplicate stage id {st.id!r} (first at pipeline.stages."
                                    f"{first_with_id[st.id]}.id)")
            else:
                first_with_id[st.id] = i
            self.op_fields(p, st.op, st.delta, st.resolver_key)
            prev = -1
            seen: set[int] = set()
            for k, dep in enumerate(st.depends_on):
                key = f"{p}.depends_on.{k}"
                if not isinstance(dep, int) or dep < 0:
                    self.bad(key, f"dependency must be a stage index, got {dep!r}")
                    continue
                if dep in seen:
                    self.bad(key, f"duplicate dependency on stage {dep}")
                elif dep <= prev:
                    self.bad(key, f"depends_on must be strictly increasing ({dep} after {prev})")
                if dep == i:
                    self.bad(key, f"stage {i} depends on itself")
                elif dep > i:
                    self.bad(key, f"forward reference: stage {i} depends on later stage {dep}; "
                                  "stages are listed in topological order")
                seen.add(dep)
                prev = max(prev, dep)
            if i > 0 and st.op != "identity" and not st.depends_on:
                self.bad(f"{p}.depends_on",
                         f"stage {i} ({st.op}) is not the first stage and modifies or acts on the "
                         "message; it must declare its dependencies")

    # -- LaneGraph ---------------------------------------------------------------------------------

    def lane_graph(self, spec: LaneGraphSpecV1) -> None:
        self.enum("pipeline.on_full", spec.on_full, ON_FULL)
        lane_index: dict[str, int] = {}
        kinds: dict[str, str] = {}
        if not spec.lanes:
            self.bad("pipeline.lanes", "a LaneGraph spec needs at least one lane")
        for i, lane in enumerate(spec.lanes):
            p = f"pipeline.lanes.{i}"
            self.unique_name("lanes", i, lane.name, "lane", lane_index)
            if not self.enum(f"{p}.kind", lane.kind, LANE_KINDS):
                continue
            kinds.setdefault(lane.name, lane.kind)
            if lane.kind != "journal":
                cap = lane.capacity
                if not isinstance(cap, int) or cap < 2 or not is_power_of_two(cap):
                    self.bad(f"{p}.capacity", f"capacity must be a power of two >= 2, got {cap!r}")
            if not isinstance(lane.slot_bytes, int) or lane.slot_bytes < 1:
                self.bad(f"{p}.slot_bytes", f"slot_bytes must be >= 1, got {lane.slot_bytes!r}")
            if lane.kind == "fanout":
                if lane.fanout is None:
                    self.bad(f"{p}.fanout", "a fanout lane needs fanout (number of subscribers, "
                                            f"1..{MAX_FANOUT})")
                elif not isinstance(lane.fanout, int) or not 1 <= lane.fanout <= MAX_FANOUT:
                    self.bad(f"{p}.fanout", f"fanout must be 1..{MAX_FANOUT}, got {lane.fanout!r}")
            elif lane.fanout is not None:
                self.bad(f"{p}.fanout", f"key does not apply to {lane.kind} lanes")
            if lane.kind == "journal":
                seg = DEFAULT_SEGMENT_BYTES if lane.segment_bytes is None else lane.segment_bytes
                slot = lane.slot_bytes if isinstance(lane.slot_bytes, int) else 0
                need = max(MIN_SEGMENT_BYTES, (slot + 7) // 8 * 8 + _JOURNAL_RECORD_OVERHEAD)
                if not isinstance(seg, int) or seg < need:
                    self.bad(f"{p}.segment_bytes",
                             f"segment_bytes must be >= {MIN_SEGMENT_BYTES} and hold one record: slot_bytes "
                             f"rounded up to 8, + {_JOURNAL_RECORD_OVERHEAD} (here {need}), got {seg!r}")
            elif lane.segment_bytes is not None:
                self.bad(f"{p}.segment_bytes", f"key does not apply to {lane.kind} lanes")
            if lane.on_full is not None:
                self.enum(f"{p}.on_full", lane.on_full, ON_FULL)

        writers: dict[str, list[str]] = defaultdict(list)
        readers: dict[str, list[str]] = defaultdict(list)
        ingress_lanes: list[str] = []

        def lane_ref(key: str, lane_name: object) -> bool:
            if not isinstance(lane_name, str) or lane_name not in lane_index:
                self.bad(key, f"unknown lane {lane_name!r}")
                return False
            return True

        seen_ep: dict[str, int] = {}
        for i, ep in enumerate(spec.endpoints):
            p = f"pipeline.endpoints.{i}"
            self.unique_name("endpoints", i, ep.name, "endpoint", seen_ep)
            direction_ok = self.enum(f"{p}.direction", ep.direction, ENDPOINT_DIRECTIONS)
            if lane_ref(f"{p}.lane", ep.lane) and direction_ok:
                if ep.direction == "ingress":
                    writers[ep.lane].append(f"ingress endpoint {ep.name!r}")
                    ingress_lanes.append(ep.lane)
                else:
                    readers[ep.lane].append(f"egress endpoint {ep.name!r}")

        seen_role: dict[str, int] = {}
        edges: dict[str, list[tuple[str, int]]] = defaultdict(list)  # lane -> [(lane, role index)]
        for i, role in enumerate(spec.roles):
            p = f"pipeline.roles.{i}"
            self.unique_name("roles", i, role.name, "role", seen_role)
            if not self.enum(f"{p}.kind", role.kind, ROLE_KINDS):
                continue
            n_in, n_out = len(role.inputs), len(role.outputs)
            if role.kind == "merge":
                if n_in < 2:
                    self.bad(f"{p}.inputs", f"a merge role needs at least 2 inputs, has {n_in}")
            elif n_in != 1:
                self.bad(f"{p}.inputs", f"a {role.kind} role needs exactly 1 input, has {n_in}")
            if role.kind == "router":
                if n_out < 2:
                    self.bad(f"{p}.outputs", f"a router role needs at least 2 outputs, has {n_out}")
            elif n_out != 1:
                self.bad(f"{p}.outputs", f"a {role.kind} role needs exactly 1 output, has {n_out}")
            if role.kind == "stage":
                self.op_fields(p, role.op or "identity", role.delta, role.resolver_key)
            else:
                for fld in ("op", "delta", "resolver_key"):
                    if getattr(role, fld) is not None:
                        self.bad(f"{p}.{fld}", f"key does not apply to {role.kind} roles")
            if role.kind == "router":
                if role.route is None:
                    self.bad(f"{p}.route", "a router role needs route (round_robin or bytes:<offset>:<len>)")
                elif isinstance(role.route, BytesKey):
                    self.bytes_key(f"{p}.route", role.route, "route")
                elif role.route != "round_robin":
                    self.bad(f"{p}.route",
                             f"expected round_robin or bytes:<offset>:<len>, got {role.route!r}")
            elif role.route is not None:
                self.bad(f"{p}.route", f"key does not apply to {role.kind} roles")
            ins = [x for k, x in enumerate(role.inputs) if lane_ref(f"{p}.inputs.{k}", x)]
            outs = [x for k, x in enumerate(role.outputs) if lane_ref(f"{p}.outputs.{k}", x)]
            for x in ins:
                readers[x].append(f"role {role.name!r}")
            for x in outs:
                writers[x].append(f"role {role.name!r}")
            for a in ins:
                for b in outs:
                    edges[a].append((b, i))

        for name, i in lane_index.items():
            kind = kinds.get(name)
            if kind is None:
                continue
            p = f"pipeline.lanes.{i}"
            w, r = writers.get(name, []), readers.get(name, [])
            if kind == "mpsc":
                if not w:
                    self.bad(p, f"lane {name!r} (mpsc) has no writer; it needs at least one")
            elif len(w) != 1:
                self.bad(p, f"lane {name!r} ({kind}) must have exactly one writer, has {len(w)}"
                            + (f": {', '.join(w)}" if w else ""))
            if kind in ("events", "mpsc") and len(r) != 1:
                self.bad(p, f"lane {name!r} ({kind}) must have exactly one reader, has {len(r)}"
                            + (f": {', '.join(r)}" if r else ""))
            if kind == "fanout":
                width = spec.lanes[i].fanout
                top = width if isinstance(width, int) and 1 <= width <= MAX_FANOUT else MAX_FANOUT
                if not 1 <= len(r) <= top:
                    self.bad(p, f"lane {name!r} (fanout {width}) must have between 1 and {top} readers, "
                                f"has {len(r)}")

        self.cycles(spec, edges)
        reached: set[str] = set()
        stack = list(ingress_lanes)
        while stack:
            lane_name = stack.pop()
            if lane_name in reached:
                continue
            reached.add(lane_name)
            stack.extend(b for b, _ in edges.get(lane_name, []))
        for name, i in lane_index.items():
            if name not in reached:
                self.bad(f"pipeline.lanes.{i}", f"lane {name!r} is not reachable from any ingress endpoint")

    def cycles(self, spec: LaneGraphSpecV1, edges: dict[str, list[tuple[str, int]]]) -> None:
        """Report each lane cycle once, naming the role that closes it."""
        white, grey, black = 0, 1, 2
        color: dict[str, int] = defaultdict(int)
        reported: set[int] = set()
        for start in [lane.name for lane in spec.lanes]:
            if color[start] != white:
                continue
            stack: list[tuple[str, int]] = [(start, 0)]
            color[start] = grey
            while stack:
                node, pos = stack[-1]
                out = edges.get(node, [])
                if pos < len(out):
                    stack[-1] = (node, pos + 1)
                    nxt, role_i = out[pos]
                    if color[nxt] == grey:
                        if role_i not in reported:
                            reported.add(role_i)
                            self.bad(f"pipeline.roles.{role_i}",
                                     f"cycle: role {spec.roles[role_i].name!r} writes lane {nxt!r}, which "
                                     f"feeds back into its own input")
                    elif color[nxt] == white:
                        color[nxt] = grey
                        stack.append((nxt, 0))
                else:
                    color[node] = black
                    stack.pop()
