"""Plan a LaneGraph for execution: who writes and reads each lane, in which order roles run.

``plan_lanegraph(spec)`` turns a (validated) :class:`~byteor.LaneGraphSpecV1` into a
:class:`LaneGraphPlan` both runners share: every lane with its writers, its reader cells (one per
reader: a fanout lane's subscribers each get their own cell), every role in topological order, and
the ingress/egress bindings. Shapes the executors do not support are refused with
:class:`~byteor.UnsupportedSpecError` listing every reason (``lanegraph_unsupported_reasons``), never
run best-effort.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..._errors import UnsupportedSpecError
from ...spec.model import MAX_FANOUT, BytesKey, LaneGraphSpecV1, RoleV1

__all__ = [
    "LaneGraphPlan",
    "LanePlan",
    "ReaderRef",
    "RolePlan",
    "lanegraph_unsupported_reasons",
    "plan_lanegraph",
]

#: Most consumer cells the native ring offers (fanout uses one per subscriber).
_MAX_CELLS = MAX_FANOUT
#: Most inputs or outputs of one role (the per-role counters file has 8 ports each way).
_MAX_PORTS = 8


@dataclass(frozen=True, slots=True)
class ReaderRef:
    """One reader of a lane: a role input or an egress endpoint, with its consumer cell."""

    lane: str
    cell: int
    who: str  # "role:<name>" or "egress:<name>"


@dataclass(frozen=True, slots=True)
class LanePlan:
    name: str
    kind: str
    capacity: int  # journal lanes: 0 (unbounded, segments on disk)
    slot_bytes: int
    segment_bytes: int
    on_full: str
    writers: tuple[str, ...]  # "role:<name>" / "ingress:<name>"
    readers: tuple[ReaderRef, ...]

    @property
    def cells(self) -> int:
        return max(1, len(self.readers))


@dataclass(frozen=True, slots=True)
class RolePlan:
    name: str
    kind: str
    inputs: tuple[ReaderRef, ...]
    outputs: tuple[str, ...]
    role: RoleV1

    @property
    def route_key(self) -> BytesKey | None:
        return self.role.route if isinstance(self.role.route, BytesKey) else None


@dataclass(frozen=True, slots=True)
class LaneGraphPlan:
    name: str
    on_full: str
    lanes: dict[str, LanePlan]
    roles: tuple[RolePlan, ...]  # topological order
    ingress: tuple[tuple[str, str], ...]  # (endpoint, lane)
    egress: tuple[ReaderRef, ...]  # who = "egress:<endpoint>"

    def lane(self, name: str) -> LanePlan:
        return self.lanes[name]


def _reasons_and_plan(spec: LaneGraphSpecV1) -> tuple[list[str], LaneGraphPlan | None]:
    reasons: list[str] = []
    by_name = {lane.name: lane for lane in spec.lanes}
    writers: dict[str, list[str]] = {name: [] for name in by_name}
    readers: dict[str, list[str]] = {name: [] for name in by_name}

    def known(lane: str, where: str) -> bool:
        if lane not in by_name:
            reasons.append(f"{where} references unknown lane {lane!r}")
            return False
        return True

    ingress: list[tuple[str, str]] = []
    egress_names: list[tuple[str, str]] = []
    for i, ep in enumerate(spec.endpoints):
        where = f"pipeline.endpoints.{i}.lane"
        if not known(ep.lane, where):
            continue
        if ep.direction == "ingress":
            writers[ep.lane].append(f"ingress:{ep.name}")
            ingress.append((ep.name, ep.lane))
        else:
            readers[ep.lane].append(f"egress:{ep.name}")
            egress_names.append((ep.name, ep.lane))
    for i, role in enumerate(spec.roles):
        for k, ln in enumerate(role.inputs):
            if known(ln, f"pipeline.roles.{i}.inputs.{k}"):
                readers[ln].append(f"role:{role.name}")
        for k, ln in enumerate(role.outputs):
            if known(ln, f"pipeline.roles.{i}.outputs.{k}"):
                writers[ln].append(f"role:{role.name}")
        if role.kind == "router" and role.route is None:
            reasons.append(f"router role {role.name!r} has no route (pipeline.roles.{i}.route)")
        if role.kind == "stage" and role.op not in ("identity", "add_u8", "resolver"):
            reasons.append(f"stage role {role.name!r} has unknown op {role.op!r}")
        if role.kind in ("stage", "bridge", "router") and len(role.inputs) != 1:
            reasons.append(f"{role.kind} role {role.name!r} needs exactly one input")
        if len(role.inputs) > _MAX_PORTS or len(role.outputs) > _MAX_PORTS:
            reasons.append(f"role {role.name!r}: at most {_MAX_PORTS} inputs and {_MAX_PORTS} outputs per role")
        if role.kind == "merge" and len(set(role.inputs)) != len(role.inputs):
            reasons.append(f"merge role {role.name!r} reads the same lane twice")
        if role.kind == "router" and len(set(role.outputs)) != len(role.outputs):
            reasons.append(f"router role {role.name!r} writes the same lane twice")
    if not ingress:
        reasons.append("the graph has no ingress endpoint: nothing could enter it")
    if not egress_names and not any(lane.kind == "journal" for lane in spec.lanes):
        reasons.append("the graph has no egress endpoint and no journal lane: its output would be lost")
    for lane in spec.lanes:
        w, r = writers[lane.name], readers[lane.name]
        if lane.kind not in ("events", "mpsc", "fanout", "journal"):
            reasons.append(f"lane {lane.name!r} has unknown kind {lane.kind!r}")
            continue
        if not w:
            reasons.append(f"lane {lane.name!r} has no writer")
        if lane.kind != "mpsc" and len(w) > 1:
            reasons.append(
                f"{lane.kind} lane {lane.name!r} has {len(w)} writers; only mpsc lanes take several"
            )
        if lane.kind in ("events", "mpsc") and len(r) != 1:
            reasons.append(f"{lane.kind} lane {lane.name!r} needs exactly one reader, has {len(r)}")
        if lane.kind == "fanout":
            width = lane.fanout or 0
            if not 1 <= len(r) <= min(width, _MAX_CELLS):
                reasons.append(
                    f"fanout lane {lane.name!r} has {len(r)} readers; fanout={width} allows 1..{width}"
                )
        if lane.kind != "journal" and (lane.capacity is None or lane.capacity < 2
                                       or lane.capacity & (lane.capacity - 1)):
            reasons.append(f"lane {lane.name!r} capacity {lane.capacity} is not a power of two >= 2")
        if lane.slot_bytes < 1:
            reasons.append(f"lane {lane.name!r} slot_bytes must be >= 1")
        if lane.kind == "journal" and lane.segment_bytes is not None and lane.segment_bytes < 64 + 8 + (
            (lane.slot_bytes + 7) & ~7
        ):
            reasons.append(
                f"journal lane {lane.name!r}: segment_bytes {lane.segment_bytes} cannot hold one record"
            )
    # topological order of roles over lanes (roles writing a lane come before roles reading it)
    role_by_name = {role.name: role for role in spec.roles}
    deps: dict[str, set[str]] = {name: set() for name in role_by_name}
    for role in spec.roles:
        for lane_name in role.inputs:
            for writer in writers.get(lane_name, []):
                if writer.startswith("role:"):
                    deps[role.name].add(writer[5:])
    order: list[str] = []
    done: set[str] = set()
    pending = [role.name for role in spec.roles]
    while pending:
        progressed = False
        for name in list(pending):
            if deps[name] <= done:
                order.append(name)
                done.add(name)
                pending.remove(name)
                progressed = True
        if not progressed:
            reasons.append(f"the roles {', '.join(sorted(pending))} form a cycle")
            break
    if reasons:
        return reasons, None

    def cells_of(lane: str) -> dict[str, int]:
        return {who: i for i, who in enumerate(readers[lane])}

    lanes: dict[str, LanePlan] = {}
    for lane in spec.lanes:
        lanes[lane.name] = LanePlan(
            name=lane.name,
            kind=lane.kind,
            capacity=0 if lane.kind == "journal" else int(lane.capacity or 0),
            slot_bytes=lane.slot_bytes,
            segment_bytes=int(lane.segment_bytes or 64 * 1024 * 1024),
            on_full=spec.lane_on_full(lane.name),
            writers=tuple(writers[lane.name]),
            readers=tuple(ReaderRef(lane.name, c, who) for who, c in cells_of(lane.name).items()),
        )
    roles = []
    for name in order:
        role = role_by_name[name]
        ins = tuple(ReaderRef(ln, cells_of(ln)[f"role:{name}"], f"role:{name}") for ln in role.inputs)
        roles.append(RolePlan(name, role.kind, ins, tuple(role.outputs), role))
    egress = tuple(ReaderRef(ln, cells_of(ln)[f"egress:{ep}"], f"egress:{ep}") for ep, ln in egress_names)
    return [], LaneGraphPlan(spec.name, spec.on_full, lanes, tuple(roles), tuple(ingress), egress)


def lanegraph_unsupported_reasons(spec: LaneGraphSpecV1) -> list[str]:
    """What keeps this build's LaneGraph runners from running ``spec`` (empty: supported)."""
    return _reasons_and_plan(spec)[0]


def plan_lanegraph(spec: LaneGraphSpecV1) -> LaneGraphPlan:
    """The execution plan; raises :class:`~byteor.UnsupportedSpecError` naming every problem."""
    reasons, plan = _reasons_and_plan(spec)
    if plan is None:
        raise UnsupportedSpecError("LaneGraph shape not supported: " + "; ".join(reasons))
    return plan
