"""Graphviz DOT of a spec: the stage DAG of a SingleRing, or the lanes, roles and endpoints of a
LaneGraph. Output is deterministic (same spec, same bytes) so it can be diffed and reviewed."""

from __future__ import annotations

from .kv import spec_hash
from .model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1, StageV1
from .semantics import implicit_orderings

__all__ = ["to_dot"]


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _stage_label(st: StageV1) -> str:
    if st.op == "add_u8":
        return f"{st.id}\nadd_u8 +{1 if st.delta is None else st.delta}"
    if st.op == "resolver":
        return f"{st.id}\n{st.resolver_key or ''}"
    return f"{st.id}\n{st.op}"


def _single_ring(spec: SingleRingSpecV1) -> list[str]:
    lines = [
        f"  label={_q(f'{spec.name} (SingleRing, shards={spec.shards}, {spec.ordering})')};",
        "  node [shape=box, style=rounded];",
        f"  {_q('in:' + spec.ingress)} [label={_q(spec.ingress)}, shape=cds];",
        f"  {_q('out:' + spec.egress)} [label={_q(spec.egress)}, shape=cds];",
    ]
    used: set[int] = set()
    for i, st in enumerate(spec.stages):
        attrs = ", style=\"rounded,filled\", fillcolor=\"#fde9c9\"" if st.modifies_slot else ""
        lines.append(f"  {_q(f's{i}')} [label={_q(f'{i}: ' + _stage_label(st))}{attrs}];")
        used.update(st.depends_on)
    for i, st in enumerate(spec.stages):
        if not st.depends_on:
            lines.append(f"  {_q('in:' + spec.ingress)} -> {_q(f's{i}')};")
        for d in st.depends_on:
            lines.append(f"  {_q(f's{d}')} -> {_q(f's{i}')};")
    if all(0 <= d < i for i, st in enumerate(spec.stages) for d in st.depends_on):
        for o in implicit_orderings(spec):
            lines.append(f"  {_q(f's{o.after}')} -> {_q(f's{o.stage}')} [style=dashed, color=gray40, "
                         f"tooltip={_q(o.reason)}];")
    for i in range(len(spec.stages)):
        if i not in used:
            lines.append(f"  {_q(f's{i}')} -> {_q('out:' + spec.egress)};")
    return lines


def _lane_graph(spec: LaneGraphSpecV1) -> list[str]:
    lines = [f"  label={_q(f'{spec.name} (LaneGraph, on_full={spec.on_full})')};"]
    for lane in spec.lanes:
        extra = f" x{lane.fanout}" if lane.kind == "fanout" else ""
        label = f"{lane.name}\n{lane.kind}{extra}"
        if lane.on_full is not None:
            label += f"\non_full={lane.on_full}"
        shape = "cylinder" if lane.kind == "journal" else "ellipse"
        lines.append(f"  {_q('lane:' + lane.name)} [label={_q(label)}, shape={shape}];")
    for role in spec.roles:
        detail = role.kind
        if role.kind == "stage":
            detail = _stage_label(StageV1(role.name, role.op or "identity", role.delta,
                                          role.resolver_key)).split("\n", 1)[1]
        elif role.kind == "router" and role.route is not None:
            detail = f"router {role.route}"
        lines.append(f"  {_q('role:' + role.name)} [label={_q(f'{role.name}' + chr(10) + detail)}, "
                     "shape=box, style=rounded];")
        for lane_name in role.inputs:
            lines.append(f"  {_q('lane:' + lane_name)} -> {_q('role:' + role.name)};")
        for lane_name in role.outputs:
            lines.append(f"  {_q('role:' + role.name)} -> {_q('lane:' + lane_name)};")
    for ep in spec.endpoints:
        lines.append(f"  {_q('ep:' + ep.name)} [label={_q(f'{ep.name} ({ep.direction})')}, shape=cds];")
        if ep.direction == "ingress":
            lines.append(f"  {_q('ep:' + ep.name)} -> {_q('lane:' + ep.lane)};")
        else:
            lines.append(f"  {_q('lane:' + ep.lane)} -> {_q('ep:' + ep.name)};")
    return lines


def to_dot(spec: PipelineSpecV1) -> str:
    """The DOT text of ``spec`` (a ``digraph``); dashed edges are the implicit orderings."""
    body = _single_ring(spec) if isinstance(spec, SingleRingSpecV1) else _lane_graph(spec)
    head = [f"// {spec_hash(spec)}", f"digraph {_q(spec.name)} {{", "  rankdir=LR;", "  labelloc=t;"]
    return "\n".join([*head, *body, "}"]) + "\n"
