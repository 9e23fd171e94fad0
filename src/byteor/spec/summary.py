"""``spec_summary``: the JSON-able "parsed spec summary" (v1) used by ``describe --json`` and
as the ``spec`` field of the policy audit record.

Shape: ``{"model", "name", "hash", "single_ring": {...}}`` for SingleRing specs and
``{"model", "name", "hash", "lane_graph": {...}}`` for LaneGraph specs. The summary does not validate:
it describes whatever decoded (callers that need validity run :func:`~byteor.spec.validate.check_v1`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .kv import spec_hash
from .model import LANE_KINDS, ROLE_KINDS, LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1, StageV1

__all__ = ["spec_summary"]


def _stage(i: int, st: StageV1) -> dict[str, Any]:
    return {
        "index": i,
        "id": st.id,
        "op": st.op,
        "delta": (1 if st.delta is None else st.delta) if st.op == "add_u8" else None,
        "resolver_key": st.resolver_key if st.op == "resolver" else None,
        "family": st.family,
        "depends_on": list(st.depends_on),
        "modifies_slot": st.modifies_slot,
    }


def _single_ring(spec: SingleRingSpecV1) -> dict[str, Any]:
    ops = Counter(st.op for st in spec.stages)
    return {
        "shards": spec.shards,
        "ordering": spec.ordering,
        "producer": spec.producer,
        "scheduling": spec.scheduling,
        "shard_key": None if spec.shard_key is None else str(spec.shard_key),
        "capacity": spec.capacity,
        "slot_bytes": spec.slot_bytes,
        "ingress": spec.ingress,
        "egress": spec.egress,
        "stage_count": len(spec.stages),
        "stage_ops": {op: ops[op] for op in sorted(ops)},
        "stages": [_stage(i, st) for i, st in enumerate(spec.stages)],
    }


def _lane_graph(spec: LaneGraphSpecV1) -> dict[str, Any]:
    lanes = []
    for lane in spec.lanes:
        entry: dict[str, Any] = {"name": lane.name, "kind": lane.kind, "slot_bytes": lane.slot_bytes,
                                 "on_full": spec.lane_on_full(lane.name)}
        if lane.kind != "journal":
            entry["capacity"] = lane.capacity
        if lane.kind == "fanout":
            entry["fanout"] = lane.fanout
        if lane.kind == "journal":
            entry["segment_bytes"] = lane.segment_bytes
        lanes.append(entry)
    roles = []
    for role in spec.roles:
        r: dict[str, Any] = {"name": role.name, "kind": role.kind, "inputs": list(role.inputs),
                             "outputs": list(role.outputs)}
        if role.kind == "stage":
            op = role.op or "identity"
            r["op"] = op
            if op == "add_u8":
                r["delta"] = 1 if role.delta is None else role.delta
            if op == "resolver":
                r["resolver_key"] = role.resolver_key
                r["family"] = role.family
        if role.kind == "router":
            r["route"] = None if role.route is None else str(role.route)
        roles.append(r)
    lane_kinds = Counter(lane.kind for lane in spec.lanes)
    role_kinds = Counter(role.kind for role in spec.roles)
    return {
        "on_full": spec.on_full,
        "lane_count": len(spec.lanes),
        "role_count": len(spec.roles),
        "endpoint_count": len(spec.endpoints),
        "lane_kinds": {k: lane_kinds[k] for k in LANE_KINDS if lane_kinds[k]},
        "role_kinds": {k: role_kinds[k] for k in ROLE_KINDS if role_kinds[k]},
        "lanes": lanes,
        "roles": roles,
        "endpoints": [{"name": ep.name, "direction": ep.direction, "lane": ep.lane} for ep in spec.endpoints],
    }


def spec_summary(spec: PipelineSpecV1) -> dict[str, Any]:
    """The parsed-spec summary of ``spec`` (JSON-able; key order is stable)."""
    out: dict[str, Any] = {"model": spec.target, "name": spec.name, "hash": spec_hash(spec)}
    if isinstance(spec, SingleRingSpecV1):
        out["single_ring"] = _single_ring(spec)
    else:
        out["lane_graph"] = _lane_graph(spec)
    return out
