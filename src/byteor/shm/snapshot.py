"""``RingSnapshot``: the read-only view of a running ring, and ``single_ring_snapshot.json``.

Taking a snapshot attaches the ring file and reads its cursors, gating cells and participants
table; it never writes and never waits, so it is safe while the pipeline runs. Heartbeats are
``CLOCK_MONOTONIC`` nanoseconds (the same clock as :func:`time.monotonic_ns` in every process).

JSON shape (``snapshot_v`` 1)::

    {"snapshot_v": 1, "spec_hash": "sha256:...", "path": "...", "capacity": 1024, "slot_bytes": 256,
     "cursor": 41, "stages": [{"index": 0, "gating": 41, "lag": 0}, ...],
     "egress": {"index": 2, "gating": 40, "lag": 1} | null, "fill": 1,
     "participants": [{"role": 1, "pid": 123, "alive": true, "heartbeat_age_ms": 3.5}, ...],
     "stop": false, "taken_unix_ms": 1795437323498}

``lag`` = cursor - gating; ``fill`` = cursor - min(gating) (slots holding unconsumed messages).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from .. import _native
from .._errors import ArtifactError, ShmError
from .._json import check_version, read_json_object, require, write_json
from .._schemas import SCHEMA_VERSIONS
from ._files import attach_ring, pid_alive

__all__ = [
    "GatingView",
    "ParticipantView",
    "RingSnapshot",
    "read_ring_snapshot",
    "take_snapshot",
    "write_ring_snapshot",
    "write_ring_snapshot_file",
]

ARTIFACT = "single_ring_snapshot"


@dataclass(frozen=True)
class GatingView:
    """One consumer cell: its index, gating sequence and lag behind the producer cursor."""

    index: int
    gating: int
    lag: int


@dataclass(frozen=True)
class ParticipantView:
    """One registered participant (producer, stage or egress process)."""

    role: int
    pid: int
    alive: bool
    heartbeat_age_ms: float


@dataclass(frozen=True)
class RingSnapshot:
    """Ring state at one instant. ``egress`` is the last consumer cell when the ring has one."""

    spec_hash: str
    path: str
    capacity: int
    slot_bytes: int
    cursor: int
    stages: tuple[GatingView, ...]
    egress: GatingView | None
    fill: int
    participants: tuple[ParticipantView, ...]
    stop: bool
    taken_unix_ms: int
    snapshot_v: int = SCHEMA_VERSIONS[ARTIFACT]

    def to_json(self) -> dict[str, Any]:
        """The ``single_ring_snapshot.json`` object (field order as documented)."""
        return {
            "snapshot_v": self.snapshot_v,
            "spec_hash": self.spec_hash,
            "path": self.path,
            "capacity": self.capacity,
            "slot_bytes": self.slot_bytes,
            "cursor": self.cursor,
            "stages": [asdict(s) for s in self.stages],
            "egress": None if self.egress is None else asdict(self.egress),
            "fill": self.fill,
            "participants": [asdict(p) for p in self.participants],
            "stop": self.stop,
            "taken_unix_ms": self.taken_unix_ms,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], *, path: str = "<snapshot>") -> RingSnapshot:
        """Parse a snapshot object; a missing/mistyped field or a newer major is an ArtifactError."""
        version = check_version(obj, artifact=ARTIFACT, field="snapshot_v", path=path, required=True)

        def gv(item: Any, where: str) -> GatingView:
            if not isinstance(item, dict):
                raise ArtifactError(f"{path}: `{where}` must be an object")
            return GatingView(index=require(item, "index", int, path=path),
                              gating=require(item, "gating", int, path=path),
                              lag=require(item, "lag", int, path=path))

        stages = tuple(gv(s, f"stages.{i}") for i, s in enumerate(require(obj, "stages", list, path=path)))
        egress_raw = require(obj, "egress", dict, path=path, nullable=True)
        parts: list[ParticipantView] = []
        for i, p in enumerate(require(obj, "participants", list, path=path)):
            if not isinstance(p, dict):
                raise ArtifactError(f"{path}: `participants.{i}` must be an object")
            parts.append(ParticipantView(role=require(p, "role", int, path=path),
                                         pid=require(p, "pid", int, path=path),
                                         alive=require(p, "alive", bool, path=path),
                                         heartbeat_age_ms=float(require(p, "heartbeat_age_ms", (int, float),
                                                                        path=path))))
        return cls(spec_hash=require(obj, "spec_hash", str, path=path),
                   path=require(obj, "path", str, path=path),
                   capacity=require(obj, "capacity", int, path=path),
                   slot_bytes=require(obj, "slot_bytes", int, path=path),
                   cursor=require(obj, "cursor", int, path=path),
                   stages=stages,
                   egress=None if egress_raw is None else gv(egress_raw, "egress"),
                   fill=require(obj, "fill", int, path=path),
                   participants=tuple(parts),
                   stop=bool(obj.get("stop", False)),
                   taken_unix_ms=require(obj, "taken_unix_ms", int, path=path),
                   snapshot_v=version)


def take_snapshot(ring: _native.Ring | str | os.PathLike[str], *, egress: bool = True) -> RingSnapshot:
    """Snapshot an attached ring, or attach the file at a path just for this (read only).

    ``egress=True`` reports the last consumer cell as the egress (the SingleRing runtime's layout:
    stages first, egress last); with ``egress=False`` (or a single cell) every cell is a stage.
    Raises :class:`~byteor.ShmError` when a path cannot be attached.
    """
    if isinstance(ring, _native.Ring):
        return _from_ring(ring, egress=egress)
    attached = attach_ring(ring)
    try:
        return _from_ring(attached, egress=egress)
    finally:
        attached.close()


def _from_ring(ring: _native.Ring, *, egress: bool) -> RingSnapshot:
    raw = ring.snapshot()
    now = int(raw["now_mono_ns"])
    cells = [GatingView(index=i, gating=int(g), lag=int(lag))
             for i, (g, lag) in enumerate(zip(raw["gating"], raw["lag"], strict=True))]
    eg: GatingView | None = None
    if egress and len(cells) > 1:
        eg = cells.pop()
    parts = tuple(
        ParticipantView(role=int(role), pid=int(pid),
                        alive=state == _native.PARTICIPANT_RUNNING and pid_alive(int(pid)),
                        heartbeat_age_ms=round(max(0, now - int(hb)) / 1e6, 3))
        for (_slot, role, pid, hb, state) in raw["participants"]
    )
    return RingSnapshot(spec_hash="sha256:" + bytes(raw["spec_hash"]).hex(), path=ring.path,
                        capacity=int(raw["capacity"]), slot_bytes=int(raw["slot_bytes"]),
                        cursor=int(raw["cursor"]), stages=tuple(cells), egress=eg, fill=int(raw["fill"]),
                        participants=parts, stop=bool(raw["stop"]), taken_unix_ms=time.time_ns() // 1_000_000)


def write_ring_snapshot(dest: str | os.PathLike[str], snap: RingSnapshot) -> None:
    """Write ``single_ring_snapshot.json`` atomically."""
    write_json(dest, snap.to_json())


def read_ring_snapshot(path: str | os.PathLike[str]) -> RingSnapshot:
    """Read ``single_ring_snapshot.json``; a newer major ``snapshot_v`` is an ArtifactError."""
    p = os.fspath(path)
    return RingSnapshot.from_json(read_json_object(p, artifact=ARTIFACT), path=p)


def write_ring_snapshot_file(ring_path: str, dest: str) -> RingSnapshot:
    """Snapshot the ring at ``ring_path`` (a ring file, or a directory of ``*.ring`` shard files:
    the first shard is the top level and every shard is listed under ``shards``) into ``dest``.
    """
    if os.path.isdir(ring_path):
        files = sorted(os.path.join(ring_path, f) for f in os.listdir(ring_path) if f.endswith(".ring"))
        if not files:
            raise ShmError(f"{ring_path}: no *.ring files in this directory")
    else:
        files = [ring_path]
    snaps = [take_snapshot(f) for f in files]
    obj = snaps[0].to_json()
    if len(snaps) > 1:
        obj["shards"] = [s.to_json() for s in snaps]
    write_json(dest, obj)
    return snaps[0]
