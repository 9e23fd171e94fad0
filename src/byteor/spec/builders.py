"""Builders: the baseline Python authoring API for concrete v1 specs.

``SingleRingBuilder`` and :func:`single_ring_chain` build a :class:`SingleRingSpecV1` whose stages are
already in topological order; ``LaneGraphBuilder`` builds a :class:`LaneGraphSpecV1`. Every ``build()``
resolves the defaults exactly as the KV decoder does (so a built spec equals the decoded canonical
text of itself) and runs validate_v1, raising :class:`~byteor.SpecValidationError` with every issue.
For a DAG given in any order, or a LaneGraph described by connections, use
:mod:`byteor.spec.plan` (``PipelinePlanV2`` and ``lower_v2``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._errors import SpecIssue, SpecValidationError
from .._stage import py_key
from .model import (
    DEFAULT_CAPACITY,
    DEFAULT_SEGMENT_BYTES,
    DEFAULT_SLOT_BYTES,
    BytesKey,
    EndpointV1,
    LaneGraphSpecV1,
    LaneV1,
    RoleV1,
    SingleRingSpecV1,
    StageV1,
)
from .validate import check_v1

__all__ = ["LaneGraphBuilder", "SingleRingBuilder", "parse_bytes_key", "single_ring_chain"]


def parse_bytes_key(value: str | BytesKey | None, *, key: str) -> BytesKey | None:
    """``"bytes:O:L"`` (or a BytesKey, or None/"none") as a :class:`BytesKey`; bad text is a spec error."""
    if value is None or isinstance(value, BytesKey):
        return value
    if value == "none":
        return None
    parts = value.split(":")
    if len(parts) == 3 and parts[0] == "bytes" and parts[1].isdigit() and parts[2].isdigit():
        return BytesKey(int(parts[1]), int(parts[2]))
    raise SpecValidationError([SpecIssue(key, f"expected bytes:<offset>:<len>, got {value!r}")])


def make_stage(stage_id: str, op: str = "identity", delta: int | None = None,
               resolver_key: str | None = None, depends_on: Iterable[int] = ()) -> StageV1:
    """A :class:`StageV1` with defaults resolved as the decoder resolves them (add_u8 delta = 1)."""
    if op == "add_u8" and delta is None:
        delta = 1
    return StageV1(stage_id, op, delta, resolver_key, tuple(depends_on))


class SingleRingBuilder:
    """Fluent builder for a SingleRing spec::

        spec = (SingleRingBuilder("demo").capacity(64)
                .stage("a").stage("b", op="add_u8", delta=2, depends_on=["a"]).build())

    ``depends_on`` takes stage ids or indexes of stages added earlier.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._shards = 1
        self._ordering: str | None = None
        self._producer = "single"
        self._scheduling = "dedicated"
        self._shard_key: BytesKey | None = None
        self._capacity = DEFAULT_CAPACITY
        self._slot_bytes = DEFAULT_SLOT_BYTES
        self._ingress = "ingress"
        self._egress = "egress"
        self._stages: list[StageV1] = []
        self._issues: list[SpecIssue] = []

    def name(self, name: str) -> SingleRingBuilder:
        self._name = name
        return self

    def shards(self, n: int) -> SingleRingBuilder:
        self._shards = n
        return self

    def ordering(self, ordering: str) -> SingleRingBuilder:
        self._ordering = ordering
        return self

    def producer(self, producer: str) -> SingleRingBuilder:
        self._producer = producer
        return self

    def scheduling(self, scheduling: str) -> SingleRingBuilder:
        self._scheduling = scheduling
        return self

    def shard_key(self, key: str | BytesKey | None) -> SingleRingBuilder:
        self._shard_key = parse_bytes_key(key, key="pipeline.constraints.shard_key")
        return self

    def capacity(self, n: int) -> SingleRingBuilder:
        self._capacity = n
        return self

    def slot_bytes(self, n: int) -> SingleRingBuilder:
        self._slot_bytes = n
        return self

    def boundaries(self, ingress: str = "ingress", egress: str = "egress") -> SingleRingBuilder:
        self._ingress, self._egress = ingress, egress
        return self

    def stage(self, stage_id: str, fn: Callable[..., Any] | None = None, *, op: str = "identity",
              delta: int | None = None, resolver_key: str | None = None,
              depends_on: Sequence[str | int] = ()) -> SingleRingBuilder:
        """Append a stage; ``depends_on`` names earlier stages by id or by index. ``fn``, a
        module-level function, makes it a ``py:<module>:<function>`` resolver stage."""
        if fn is not None:
            op, resolver_key = "resolver", py_key(fn)
        index = len(self._stages)
        deps: list[int] = []
        for k, ref in enumerate(depends_on):
            if isinstance(ref, int):
                deps.append(ref)
                continue
            found = next((i for i, st in enumerate(self._stages) if st.id == ref), None)
            if found is None:
                self._issues.append(SpecIssue(f"pipeline.stages.{index}.depends_on.{k}",
                                              f"stage {stage_id!r} depends on {ref!r}, which is not an "
                                              "earlier stage"))
                continue
            deps.append(found)
        self._stages.append(make_stage(stage_id, op, delta, resolver_key, sorted(set(deps))
                                       if all(isinstance(r, str) for r in depends_on) else deps))
        return self

    def build(self) -> SingleRingSpecV1:
        """The validated spec; raises :class:`SpecValidationError` listing every issue."""
        ordering = self._ordering or ("strict" if self._shards == 1 else "per_key")
        spec = SingleRingSpecV1(
            name=self._name, stages=tuple(self._stages), shards=self._shards, ordering=ordering,
            producer=self._producer, scheduling=self._scheduling, shard_key=self._shard_key,
            capacity=self._capacity, slot_bytes=self._slot_bytes, ingress=self._ingress, egress=self._egress,
        )
        if self._issues:
            from .validate import validate_v1

            raise SpecValidationError(self._issues + validate_v1(spec))
        check_v1(spec)
        return spec


def single_ring_chain(name: str, *ops: str | tuple[str, int] | tuple[str, str] | Callable[..., Any],
                      capacity: int = DEFAULT_CAPACITY,
                      slot_bytes: int = DEFAULT_SLOT_BYTES) -> SingleRingSpecV1:
    """A linear chain: stage ``s<i>`` depends on ``s<i-1>``.

    Each op is ``"identity"``, ``"add_u8"`` (delta 1), ``("add_u8", delta)``,
    ``("resolver", "<stage key>")`` or a module-level function; a bare string containing ``:`` is
    taken as a resolver key.
    """
    b = SingleRingBuilder(name).capacity(capacity).slot_bytes(slot_bytes)
    for i, item in enumerate(ops):
        deps = [i - 1] if i else []
        if callable(item):
            b.stage(f"s{i}", item, depends_on=deps)
        elif isinstance(item, tuple):
            op, arg = item
            if op == "add_u8":
                b.stage(f"s{i}", op="add_u8", delta=int(arg), depends_on=deps)
            else:
                b.stage(f"s{i}", op=op, resolver_key=str(arg), depends_on=deps)
        elif ":" in item:
            b.stage(f"s{i}", op="resolver", resolver_key=item, depends_on=deps)
        else:
            b.stage(f"s{i}", op=item, depends_on=deps)
    return b.build()


class LaneGraphBuilder:
    """Fluent builder for a concrete LaneGraph spec (lanes, endpoints, roles, on_full)::

        spec = (LaneGraphBuilder("g").lane("in", "events").lane("out", "events")
                .endpoint("src", "ingress", "in").endpoint("dst", "egress", "out")
                .role("r", "stage", inputs=["in"], outputs=["out"], op="add_u8").build())
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._on_full = "block"
        self._lanes: list[LaneV1] = []
        self._endpoints: list[EndpointV1] = []
        self._roles: list[RoleV1] = []

    def on_full(self, policy: str) -> LaneGraphBuilder:
        self._on_full = policy
        return self

    def lane(self, name: str, kind: str, *, capacity: int | None = None, slot_bytes: int = DEFAULT_SLOT_BYTES,
             fanout: int | None = None, segment_bytes: int | None = None,
             on_full: str | None = None) -> LaneGraphBuilder:
        """Add a lane; capacity and segment_bytes default as in spec.kv for the lane's kind."""
        cap: int | None
        seg: int | None
        if kind == "journal":
            cap = capacity
            seg = DEFAULT_SEGMENT_BYTES if segment_bytes is None else segment_bytes
        else:
            cap = DEFAULT_CAPACITY if capacity is None else capacity
            seg = segment_bytes
        self._lanes.append(LaneV1(name, kind, cap, slot_bytes, fanout, seg, on_full))
        return self

    def endpoint(self, name: str, direction: str, lane: str) -> LaneGraphBuilder:
        self._endpoints.append(EndpointV1(name, direction, lane))
        return self

    def ingress(self, name: str, lane: str) -> LaneGraphBuilder:
        return self.endpoint(name, "ingress", lane)

    def egress(self, name: str, lane: str) -> LaneGraphBuilder:
        return self.endpoint(name, "egress", lane)

    def role(self, name: str, kind: str, *, inputs: Sequence[str], outputs: Sequence[str],
             op: str | None = None, delta: int | None = None, resolver_key: str | None = None,
             route: str | BytesKey | None = None, fn: Callable[..., Any] | None = None) -> LaneGraphBuilder:
        """Add a role; a stage role's op defaults to identity (add_u8 delta to 1). ``fn``, a
        module-level function, makes a stage role run it (``py:<module>:<function>``)."""
        if fn is not None:
            op, resolver_key = "resolver", py_key(fn)
        if kind == "stage":
            op = op or "identity"
            if op == "add_u8" and delta is None:
                delta = 1
        parsed_route: str | BytesKey | None = route
        if isinstance(route, str) and route != "round_robin":
            parsed_route = parse_bytes_key(route, key=f"pipeline.roles.{len(self._roles)}.route")
        self._roles.append(RoleV1(name, kind, tuple(inputs), tuple(outputs), op, delta, resolver_key,
                                  parsed_route))
        return self

    def build(self) -> LaneGraphSpecV1:
        """The validated spec; raises :class:`SpecValidationError` listing every issue."""
        spec = LaneGraphSpecV1(self._name, tuple(self._lanes), tuple(self._endpoints), tuple(self._roles),
                               self._on_full)
        check_v1(spec)
        return spec
