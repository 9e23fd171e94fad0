"""The v1 spec model: frozen value objects.

A :data:`PipelineSpecV1` is exactly one of :class:`SingleRingSpecV1` or :class:`LaneGraphSpecV1`.
Values are stored *resolved*: every default is filled in by the decoder and the builders, so two
equivalent specs compare equal and encode to the same canonical bytes. Enumerated fields may hold
any value of their key's domain, including the ones validate_v1 rejects (``producer="mpmc"``), so
that the validator, not the decoder, reports them with the rule they break.

Fields that apply only to some variants (``delta`` only on ``add_u8``, ``capacity`` not on journal
lanes, ...) are ``None`` where they do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_SEGMENT_BYTES",
    "DEFAULT_SLOT_BYTES",
    "ENDPOINT_DIRECTIONS",
    "LANE_KINDS",
    "MAX_FANOUT",
    "MAX_STAGES",
    "ON_FULL",
    "ORDERINGS",
    "PRODUCERS",
    "ROLE_KINDS",
    "SCHEDULINGS",
    "STAGE_OPS",
    "BytesKey",
    "EndpointV1",
    "LaneGraphSpecV1",
    "LaneV1",
    "PipelineSpecV1",
    "RoleV1",
    "SingleRingSpecV1",
    "StageV1",
]

#: SEQUENCED_SLOTS_V1_GATING: the most stages one ring supports.
MAX_STAGES = 4
#: The most subscribers a fanout lane supports.
MAX_FANOUT = 4
DEFAULT_CAPACITY = 1024
DEFAULT_SLOT_BYTES = 256
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

ORDERINGS = ("strict", "per_key", "unordered")
PRODUCERS = ("single", "mpmc")
SCHEDULINGS = ("dedicated", "work_queue")
STAGE_OPS = ("identity", "add_u8", "resolver")
LANE_KINDS = ("events", "mpsc", "fanout", "journal")
ON_FULL = ("block", "drop_newest", "fail")
ENDPOINT_DIRECTIONS = ("ingress", "egress")
ROLE_KINDS = ("stage", "bridge", "router", "merge")

Ordering = Literal["strict", "per_key", "unordered"]
StageOp = Literal["identity", "add_u8", "resolver"]


@dataclass(frozen=True, slots=True)
class BytesKey:
    """``bytes:<offset>:<len>``: the key is ``msg[offset:offset+length]`` (shard keys, router routes)."""

    offset: int
    length: int

    def __str__(self) -> str:
        return f"bytes:{self.offset}:{self.length}"

    def extract(self, msg: bytes | bytearray | memoryview) -> bytes:
        """The key bytes of one message; shorter messages give a shorter (possibly empty) key."""
        return bytes(msg[self.offset : self.offset + self.length])


@dataclass(frozen=True, slots=True)
class StageV1:
    """One stage: ``op`` with ``delta`` (add_u8 only) or ``resolver_key`` (resolver only).

    ``depends_on`` holds stage indexes as written; validate_v1 checks they are strictly increasing
    and all lower than this stage's own index.
    """

    id: str
    op: str = "identity"
    delta: int | None = None
    resolver_key: str | None = None
    depends_on: tuple[int, ...] = ()

    @property
    def family(self) -> str | None:
        """The resolver family (``http_post``, ``exec``, ...) of a resolver stage, else ``None``."""
        if self.op != "resolver" or not self.resolver_key:
            return None
        return self.resolver_key.split(":", 1)[0]

    @property
    def modifies_slot(self) -> bool:
        """Whether this stage writes the message bytes (add_u8, or a resolver that may rewrite)."""
        if self.op == "add_u8":
            return True
        if self.op == "resolver":
            return self.family not in ("http_post", "exec")
        return False


@dataclass(frozen=True, slots=True)
class SingleRingSpecV1:
    """A stage DAG over one sequenced ring (or ``shards`` rings)."""

    name: str
    stages: tuple[StageV1, ...]
    shards: int = 1
    ordering: str = "strict"
    producer: str = "single"
    scheduling: str = "dedicated"
    shard_key: BytesKey | None = None
    capacity: int = DEFAULT_CAPACITY
    slot_bytes: int = DEFAULT_SLOT_BYTES
    ingress: str = "ingress"
    egress: str = "egress"

    @property
    def target(self) -> Literal["SingleRing"]:
        return "SingleRing"


@dataclass(frozen=True, slots=True)
class LaneV1:
    """A named lane. ``capacity`` is None for journal lanes, ``fanout`` set only on fanout lanes,
    ``segment_bytes`` only on journal lanes, ``on_full`` only when overridden for this lane."""

    name: str
    kind: str
    capacity: int | None = DEFAULT_CAPACITY
    slot_bytes: int = DEFAULT_SLOT_BYTES
    fanout: int | None = None
    segment_bytes: int | None = None
    on_full: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointV1:
    name: str
    direction: str
    lane: str


@dataclass(frozen=True, slots=True)
class RoleV1:
    """A role joining lanes. ``op``/``delta``/``resolver_key`` only on stage roles, ``route`` only on
    routers (``"round_robin"`` or a :class:`BytesKey`)."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    op: str | None = None
    delta: int | None = None
    resolver_key: str | None = None
    route: str | BytesKey | None = None

    @property
    def family(self) -> str | None:
        if self.op != "resolver" or not self.resolver_key:
            return None
        return self.resolver_key.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class LaneGraphSpecV1:
    """A topology of named lanes, endpoints and roles with a default ``on_full`` policy."""

    name: str
    lanes: tuple[LaneV1, ...]
    endpoints: tuple[EndpointV1, ...]
    roles: tuple[RoleV1, ...]
    on_full: str = "block"

    @property
    def target(self) -> Literal["LaneGraph"]:
        return "LaneGraph"

    def lane(self, name: str) -> LaneV1 | None:
        for lane in self.lanes:
            if lane.name == name:
                return lane
        return None

    def lane_on_full(self, name: str) -> str:
        """The effective on_full policy of a lane (its override, else the graph's)."""
        lane = self.lane(name)
        if lane is not None and lane.on_full is not None:
            return lane.on_full
        return self.on_full


#: A v1 spec is exactly one of these two.
PipelineSpecV1 = SingleRingSpecV1 | LaneGraphSpecV1
