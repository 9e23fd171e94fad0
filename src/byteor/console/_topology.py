"""A pipeline's topology for the page: ``byteor dot``'s graph rendered to SVG by Graphviz, with one
more line in each stage, role and lane node that the page keeps up to date.

The SVG is Graphviz's own output with three changes: the XML prologue and comments are dropped (it
is inlined into HTML), the root gets ``role="img"`` and a label, and each stage / role / lane node
group gets ``data-kind`` / ``data-name`` and an ``id`` on its last text line (``node-live-<i>``,
``i`` the node's index in :attr:`Topology.nodes`). When ``dot`` is missing or fails, there is no
SVG and :attr:`Topology.why` says why; the page shows the DOT text instead.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from .._errors import UsageError
from ..spec.dot import render_dot, to_dot
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1

__all__ = ["LIVE_ID", "Node", "Topology", "build_topology", "fill_svg", "nodes_of"]

#: Sizes each box for the live line it will carry (Graphviz measures the label's text).
_PLACEHOLDER = "lag 000,000 · 00,000/s"
LIVE_ID = "node-live-{}"
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_NODE = re.compile(r'<g id="(?P<gid>[^"]*)" class="node">\s*<title>(?P<title>.*?)</title>(?P<body>.*?)</g>', re.S)
_LAST_TEXT = re.compile(r"(<text\b)([^>]*>)([^<]*)(</text>)(?!.*<text\b)", re.S)


@dataclass(frozen=True)
class Node:
    """A node of the graph that carries live figures: ``key`` is its DOT name (``s<i>``,
    ``role:<name>``, ``lane:<name>``), ``kind`` ``stage`` | ``role`` | ``lane``."""

    key: str
    kind: str
    name: str


@dataclass(frozen=True)
class Topology:
    dot: str
    svg: str | None
    why: str | None
    nodes: tuple[Node, ...]


def nodes_of(spec: PipelineSpecV1) -> tuple[Node, ...]:
    if isinstance(spec, SingleRingSpecV1):
        return tuple(Node(f"s{i}", "stage", st.id) for i, st in enumerate(spec.stages))
    assert isinstance(spec, LaneGraphSpecV1)
    return (*(Node(f"role:{r.name}", "role", r.name) for r in spec.roles),
            *(Node(f"lane:{lane.name}", "lane", lane.name) for lane in spec.lanes))


def build_topology(spec: PipelineSpecV1) -> Topology:
    """Render ``spec``'s graph (a ``dot`` process, bounded to 20 s)."""
    nodes = nodes_of(spec)
    plain = to_dot(spec)
    try:
        raw = render_dot(to_dot(spec, {n.key: _PLACEHOLDER for n in nodes}), "svg", timeout=20).decode("utf-8")
    except UsageError as exc:
        return Topology(plain, None, str(exc), nodes)
    return Topology(plain, _annotate(raw, spec.name, nodes), None, nodes)


def _annotate(raw: str, name: str, nodes: tuple[Node, ...]) -> str:
    start = raw.find("<svg")
    svg = _COMMENT.sub("", raw[start:] if start >= 0 else raw)
    index = {n.key: i for i, n in enumerate(nodes)}
    label = html.escape(f"Topology of {name}: {len(nodes)} node(s) with live figures; the tables below "
                        "give the same figures as text", quote=True)
    svg = svg.replace("<svg", f'<svg class="topology" role="img" aria-label="{label}"', 1)

    def node(m: re.Match[str]) -> str:
        i = index.get(html.unescape(m.group("title")))
        if i is None:
            return m.group(0)
        n = nodes[i]
        head = (f'<g id="{m.group("gid")}" class="node" data-kind="{n.kind}" '
                f'data-name="{html.escape(n.name, quote=True)}">')
        body = _LAST_TEXT.sub(lambda t: f'{t.group(1)} id="{LIVE_ID.format(i)}"{t.group(2)}{t.group(4)}',
                              m.group("body"), count=1)
        return f"{head}<title>{m.group('title')}</title>{body}</g>"

    return _NODE.sub(node, svg)


_LIVE_TEXT = re.compile(r'(<text id="node-live-(\d+)"[^>]*>)(</text>)')


def fill_svg(svg: str, text: dict[str, str], state: dict[str, str]) -> str:
    """``svg`` with each node's live line set from ``text`` and ``state`` (element id -> text /
    state word), as the page's script would set them: the page is complete before any script runs."""
    def one(m: re.Match[str]) -> str:
        ident = LIVE_ID.format(m.group(2))
        head = m.group(1)
        if ident in state:
            head = head.replace(f'id="{ident}"', f'id="{ident}" data-state="{html.escape(state[ident])}"', 1)
        return f"{head}{html.escape(text.get(ident, ''), quote=False)}{m.group(3)}"

    return _LIVE_TEXT.sub(one, svg)
