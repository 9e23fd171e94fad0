"""``events``, ``mpsc`` and ``fanout`` lanes over the native shared-memory ring.

A lane is one :class:`byteor._native.Ring` file (created and attached through :mod:`byteor.shm`, so it
gets the ring's header checks: magic, layout version, sizes, spec hash) named
``<lane>.<kind>.ring`` under the lane path:

* ``events``: one producer, one consumer cell.
* ``mpsc``: a multi-producer ring (per-slot published sequence, each producer's order kept), one
  consumer cell.
* ``fanout``: one producer, one consumer cell per subscriber (at most 4), no dependencies between
  cells; the producer is gated by the slowest cell, so every subscriber sees every message.

:class:`LaneWriter` applies the lane's ``on_full`` policy on publish; :class:`LaneReader` consumes
one cell in batches. Both are used by the LaneGraph role processes and by the parent's ingress and
egress endpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .._errors import PipelineFailed, ShmError

__all__ = [
    "LaneReader",
    "LaneSpec",
    "LaneWriter",
    "attach_lane",
    "create_lane",
    "lane_file",
    "spec_hash_bytes",
]

#: How long one blocking publish or wait lasts before the caller re-checks stop/abort conditions.
POLL_NS = 100_000_000


@dataclass(frozen=True, slots=True)
class LaneSpec:
    name: str
    kind: str  # events | mpsc | fanout
    capacity: int
    slot_bytes: int
    cells: int

    @property
    def multi_producer(self) -> bool:
        return self.kind == "mpsc"


def lane_file(lane_path: str, name: str, kind: str) -> str:
    return os.path.join(lane_path, f"{name}.{kind}.ring")


def spec_hash_bytes(spec_hash: str) -> bytes:
    """The 32 raw bytes of ``sha256:<hex>`` as stored in ring headers."""
    return bytes.fromhex(spec_hash.split(":", 1)[-1])


def create_lane(lane_path: str, lane: LaneSpec, spec_hash: str) -> Any:
    """Create the ring file of one lane (fails if it exists). Returns the attached Ring."""
    from ..shm import create_ring

    if lane.kind not in ("events", "mpsc", "fanout"):
        raise ShmError(f"lane {lane.name!r}: kind {lane.kind!r} has no shared-memory ring")
    return create_ring(lane_file(lane_path, lane.name, lane.kind), capacity=lane.capacity,
                       slot_bytes=lane.slot_bytes, deps=[0] * lane.cells,
                       spec_hash=spec_hash_bytes(spec_hash), multi_producer=lane.multi_producer)


def attach_lane(lane_path: str, lane: LaneSpec, spec_hash: str) -> Any:
    """Attach an existing lane ring; its geometry must match the plan (else :class:`~byteor.ShmError`)."""
    from ..shm import attach_ring

    path = lane_file(lane_path, lane.name, lane.kind)
    ring = attach_ring(path, expect_hash=spec_hash_bytes(spec_hash))
    problems = []
    if ring.capacity != lane.capacity:
        problems.append(f"capacity {ring.capacity} != {lane.capacity}")
    if ring.slot_bytes != lane.slot_bytes:
        problems.append(f"slot_bytes {ring.slot_bytes} != {lane.slot_bytes}")
    if ring.n_consumers != lane.cells:
        problems.append(f"{ring.n_consumers} consumer cells != {lane.cells}")
    if bool(ring.multi_producer) != lane.multi_producer:
        problems.append("multi-producer flag differs")
    if problems:
        ring.close()
        raise ShmError(f"{path}: lane {lane.name!r} does not match the spec: {', '.join(problems)}")
    return ring


class LaneWriter:
    """Publishes into a lane under its ``on_full`` policy.

    ``publish(msg)`` returns True when the message was written, False when it was dropped
    (``drop_newest``; counted in ``drops``). ``fail`` raises :class:`~byteor.PipelineFailed` naming
    the lane. ``block`` waits, re-checking ``abort()`` every 100 ms so a failed pipeline never leaves a
    writer blocked forever (abort returns True to give up: the publish then raises PipelineFailed).
    """

    __slots__ = ("_abort", "_block", "_fail", "_wait", "drops", "name", "ring", "slot_bytes")

    def __init__(self, ring: Any, name: str, on_full: str, wait: int, abort: Any = None) -> None:
        self.ring = ring
        self.name = name
        self.slot_bytes = int(ring.slot_bytes)
        self._block = on_full == "block"
        self._fail = on_full == "fail"
        self._wait = wait
        self._abort = abort
        self.drops = 0

    def publish(self, msg: Any) -> bool:
        if len(msg) > self.slot_bytes:
            raise PipelineFailed(
                f"message of {len(msg)} bytes exceeds lane {self.name!r} slot_bytes={self.slot_bytes}"
            )
        ring = self.ring
        if ring.try_publish(msg):
            return True
        if not self._block:
            if self._fail:
                raise PipelineFailed(f"lane {self.name!r} is full (on_full=fail): the pipeline stops")
            self.drops += 1
            return False
        while True:
            try:
                seq = ring.publish(msg, self._wait, POLL_NS)
            except TimeoutError:
                seq = -1
            if seq >= 0:
                return True
            if self._abort is not None and self._abort():
                raise PipelineFailed(f"lane {self.name!r}: publishing was aborted while the lane was full")


class LaneReader:
    """Consumes one cell of a lane: ``wait(timeout_ns)`` -> highest available sequence or -1.

    On an ``mpsc`` lane a slot may be :meth:`dropped`: a writer died between claiming it and
    publishing it, and the ring published it as dropped so that the lane goes on. Release it without
    reading it.
    """

    __slots__ = ("_dropped_length", "_holes", "_wait", "cell", "name", "next", "ring")

    def __init__(self, ring: Any, name: str, cell: int, wait: int) -> None:
        from .. import _native

        self.ring = ring
        self.name = name
        self.cell = cell
        self._wait = wait
        self._holes = bool(ring.multi_producer)
        self._dropped_length = _native.DROPPED_LENGTH
        self.next = int(ring.next_for(cell))

    def wait(self, timeout_ns: int = POLL_NS) -> int:
        return int(self.ring.wait_for(self.cell, self.next, self._wait, timeout_ns))

    def dropped(self, seq: int) -> bool:
        """Whether ``seq`` holds no message (a dead writer's claim, published as dropped)."""
        return self._holes and int(self.ring.length(seq)) == self._dropped_length

    def read(self, seq: int) -> memoryview:
        view: memoryview = self.ring.read(seq)
        return view

    def release(self, seq: int) -> None:
        self.ring.release(self.cell, seq)
        self.next = seq + 1

    def finished(self) -> bool:
        """True once the writers are done (stop requested) and this cell consumed everything."""
        ring = self.ring
        return bool(ring.stop_requested()) and self.next > int(ring.cursor())
