"""Graphviz DOT of a spec: the stage DAG of a SingleRing, or the lanes, roles and endpoints of a
LaneGraph. Output is deterministic (same spec, same bytes) so it can be diffed and reviewed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping

from .._errors import UsageError
from .kv import spec_hash
from .model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1, StageV1
from .semantics import implicit_orderings

__all__ = ["RENDER_FORMATS", "render_dot", "to_dot"]

#: What :func:`render_dot` can produce.
RENDER_FORMATS = ("svg", "png", "pdf")


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _stage_label(st: StageV1) -> str:
    if st.op == "add_u8":
        return f"{st.id}\nadd_u8 +{1 if st.delta is None else st.delta}"
    if st.op == "resolver":
        return f"{st.id}\n{st.resolver_key or ''}"
    return f"{st.id}\n{st.op}"


def _noted(label: str, node: str, notes: Mapping[str, str]) -> str:
    """``label`` with the note for ``node`` as one more line (the console's live figures)."""
    note = notes.get(node)
    return label if note is None else f"{label}\n{note}"


def _single_ring(spec: SingleRingSpecV1, notes: Mapping[str, str]) -> list[str]:
    lines = [
        f"  label={_q(f'{spec.name} (SingleRing, shards={spec.shards}, {spec.ordering})')};",
        "  node [shape=box, style=rounded];",
        f"  {_q('in:' + spec.ingress)} [label={_q(spec.ingress)}, shape=cds];",
        f"  {_q('out:' + spec.egress)} [label={_q(spec.egress)}, shape=cds];",
    ]
    used: set[int] = set()
    for i, st in enumerate(spec.stages):
        attrs = ", style=\"rounded,filled\", fillcolor=\"#fde9c9\"" if st.modifies_slot else ""
        label = _noted(f"{i}: " + _stage_label(st), f"s{i}", notes)
        lines.append(f"  {_q(f's{i}')} [label={_q(label)}{attrs}];")
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


def _lane_graph(spec: LaneGraphSpecV1, notes: Mapping[str, str]) -> list[str]:
    lines = [f"  label={_q(f'{spec.name} (LaneGraph, on_full={spec.on_full})')};"]
    for lane in spec.lanes:
        extra = f" x{lane.fanout}" if lane.kind == "fanout" else ""
        label = f"{lane.name}\n{lane.kind}{extra}"
        if lane.on_full is not None:
            label += f"\non_full={lane.on_full}"
        label = _noted(label, "lane:" + lane.name, notes)
        shape = "cylinder" if lane.kind == "journal" else "ellipse"
        lines.append(f"  {_q('lane:' + lane.name)} [label={_q(label)}, shape={shape}];")
    for role in spec.roles:
        detail = role.kind
        if role.kind == "stage":
            detail = _stage_label(StageV1(role.name, role.op or "identity", role.delta,
                                          role.resolver_key)).split("\n", 1)[1]
        elif role.kind == "router" and role.route is not None:
            detail = f"router {role.route}"
        label = _noted(f"{role.name}\n{detail}", "role:" + role.name, notes)
        lines.append(f"  {_q('role:' + role.name)} [label={_q(label)}, shape=box, style=rounded];")
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


def to_dot(spec: PipelineSpecV1, notes: Mapping[str, str] | None = None) -> str:
    """The DOT text of ``spec`` (a ``digraph``); dashed edges are the implicit orderings.

    ``notes`` adds one line to the label of a node, by node name: ``s<i>`` (SingleRing stage ``i``),
    ``role:<name>``, ``lane:<name>``. The console puts each stage's live lag and rate there."""
    notes = notes or {}
    body = _single_ring(spec, notes) if isinstance(spec, SingleRingSpecV1) else _lane_graph(spec, notes)
    head = [f"// {spec_hash(spec)}", f"digraph {_q(spec.name)} {{", "  rankdir=LR;", "  labelloc=t;"]
    return "\n".join([*head, *body, "}"]) + "\n"


def render_dot(text: str, fmt: str = "svg", *, out: str | None = None, timeout: float = 60.0) -> bytes:
    """Render DOT ``text`` with graphviz's ``dot`` (``fmt`` one of :data:`RENDER_FORMATS`): into the
    file ``out`` (``dot -o``; returns ``b""``), or returned as bytes.

    :class:`UsageError` (exit 2) saying why when ``dot`` is not installed, fails or takes longer
    than ``timeout`` seconds."""
    if fmt not in RENDER_FORMATS:
        raise UsageError(f"unsupported format {fmt!r}; use {', '.join(RENDER_FORMATS)}")
    exe = shutil.which("dot")
    if exe is None:
        raise UsageError("graphviz's `dot` is not on PATH (not installed here); install graphviz, or pipe "
                         "the DOT text to a renderer")
    try:
        proc = subprocess.run([exe, f"-T{fmt}", *(["-o", out] if out is not None else [])],
                              input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UsageError(f"graphviz `dot` did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        raise UsageError(f"graphviz `dot` failed: {proc.stderr.decode('utf-8', 'replace').strip()[:300]}")
    return b"" if out is not None else proc.stdout
