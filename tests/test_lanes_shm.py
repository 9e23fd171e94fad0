"""Lane wrappers over the native ring: geometry checks on attach, on_full on publish, reader cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from byteor import PipelineFailed, ShmError, _native
from byteor.lanes.memory import MemoryLane
from byteor.lanes.shm import LaneReader, LaneSpec, LaneWriter, attach_lane, create_lane, lane_file

HASH = "sha256:" + "11" * 32
WAIT = _native.WAIT_BLOCK


def _drain(reader: LaneReader) -> list[bytes]:
    out = []
    hi = reader.wait(0)
    if hi >= 0:
        for seq in range(reader.next, hi + 1):
            out.append(bytes(reader.read(seq)))
            reader.release(seq)
    return out


def test_fanout_cells_each_see_everything_and_slowest_gates(tmp_path: Path) -> None:
    ring = create_lane(str(tmp_path), LaneSpec("f", "fanout", 4, 32, 3), HASH)
    writer = LaneWriter(ring, "f", "drop_newest", WAIT)
    readers = [LaneReader(ring, "f", c, WAIT) for c in range(3)]
    assert all(writer.publish(b"m%d" % i) for i in range(4))
    assert not writer.publish(b"late") and writer.drops == 1  # full: the slowest cell is 4 behind
    assert _drain(readers[0]) == _drain(readers[1]) == [b"m0", b"m1", b"m2", b"m3"]
    assert not writer.publish(b"still") and writer.drops == 2  # cell 2 has not read yet
    assert _drain(readers[2]) == [b"m0", b"m1", b"m2", b"m3"]
    assert writer.publish(b"now")
    ring.request_stop()
    assert [_drain(r) for r in readers] == [[b"now"]] * 3
    assert all(r.finished() for r in readers)
    ring.close()


def test_fail_policy_names_the_lane_and_oversize_is_refused(tmp_path: Path) -> None:
    ring = create_lane(str(tmp_path), LaneSpec("ev", "events", 2, 8, 1), HASH)
    writer = LaneWriter(ring, "ev", "fail", WAIT)
    writer.publish(b"a")
    writer.publish(b"b")
    with pytest.raises(PipelineFailed, match="lane 'ev' is full"):
        writer.publish(b"c")
    with pytest.raises(PipelineFailed, match="exceeds lane 'ev' slot_bytes=8"):
        writer.publish(b"123456789")
    ring.close()


def test_block_policy_gives_up_when_aborted(tmp_path: Path) -> None:
    ring = create_lane(str(tmp_path), LaneSpec("ev", "events", 2, 8, 1), HASH)
    calls = []

    def abort() -> bool:
        calls.append(1)
        return len(calls) >= 2

    writer = LaneWriter(ring, "ev", "block", WAIT, abort=abort)
    writer.publish(b"a")
    writer.publish(b"b")
    with pytest.raises(PipelineFailed, match="aborted while the lane was full"):
        writer.publish(b"c")
    assert len(calls) == 2
    ring.close()


def test_attach_checks_geometry_and_hash(tmp_path: Path) -> None:
    spec = LaneSpec("m", "mpsc", 8, 16, 1)
    ring = create_lane(str(tmp_path), spec, HASH)
    assert ring.multi_producer and lane_file(str(tmp_path), "m", "mpsc").endswith("m.mpsc.ring")
    attach_lane(str(tmp_path), spec, HASH).close()
    with pytest.raises(ShmError, match="capacity 8 != 16"):
        attach_lane(str(tmp_path), LaneSpec("m", "mpsc", 16, 16, 1), HASH)
    with pytest.raises(ShmError):
        attach_lane(str(tmp_path), spec, "sha256:" + "22" * 32)
    with pytest.raises(ShmError, match="exists"):
        create_lane(str(tmp_path), spec, HASH)
    with pytest.raises(ShmError, match="no shared-memory ring"):
        create_lane(str(tmp_path), LaneSpec("j", "journal", 8, 16, 1), HASH)
    ring.close()


def test_memory_lane_matches_ring_semantics() -> None:
    lane = MemoryLane("f", "fanout", 2, 8, 2)
    lane.push(b"a")
    lane.push(b"b")
    assert not lane.has_room() and lane.fill() == 2
    assert lane.pop(0) == b"a" and not lane.has_room()  # cell 1 still gates
    assert lane.pop(1) == b"a" and lane.has_room()
    with pytest.raises(ValueError, match="power of two"):
        MemoryLane("x", "events", 3, 8, 1)
