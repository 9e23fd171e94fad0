"""Ring files are input: whoever can write one (its owner's processes) may put anything in it. Attach
refuses what create would refuse and cursors that no ring can reach; arithmetic on cursors read
later saturates instead of overflowing; recovery never stores a length larger than a slot.
(Also run under ASan/UBSan by .ci/sanitize.sh, where an overflow is a failure.)"""

from __future__ import annotations

import hashlib
import mmap
import struct
from pathlib import Path

import pytest

from byteor import ShmError
from byteor import _native as N
from byteor.shm import attach_ring

H = hashlib.sha256(b"untrusted").digest()
OFF_DEPS, OFF_CLAIM, OFF_PUBLISHED, OFF_GATING, OFF_REDO = 40, 768, 832, 896, 1408
I64_MAX, I64_MIN = 2**63 - 1, -(2**63)


def _ring(tmp_path: Path, deps: list[int], *, slot_bytes: int = 16, multi: bool = False) -> str:
    path = str(tmp_path / "r.ring")
    N.Ring.create(path, 8, slot_bytes, deps, H, multi_producer=multi).close()
    return path


def _poke(path: str, offset: int, fmt: str, *values: int) -> None:
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        struct.pack_into(fmt, mm, offset, *values)


def test_attach_refuses_a_cyclic_dependency_mask(tmp_path: Path) -> None:
    """create refuses [2, 1] (0 waits for 1, 1 waits for 0); a file saying so used to attach, and both
    consumers then waited for each other forever."""
    with pytest.raises(ValueError, match="cycle"):
        N.Ring.create(str(tmp_path / "x.ring"), 8, 16, [2, 1], H)
    path = _ring(tmp_path, [0, 1])
    _poke(path, OFF_DEPS, "<I", 2)
    with pytest.raises(N.AttachError, match="dependency masks contain a cycle"):
        N.Ring.attach(path)
    with pytest.raises(ShmError, match=r"r\.ring: corrupt header: the dependency masks contain a cycle"):
        attach_ring(path, expect_hash=H)


@pytest.mark.parametrize(("offset", "value", "why"), [
    (OFF_PUBLISHED, I64_MAX, "published cursor 9223372036854775807 is outside"),
    (OFF_PUBLISHED, -2, "published cursor -2 is outside"),
    (OFF_GATING, I64_MIN, "gating cursor -9223372036854775808 is outside"),
    (OFF_GATING + 64, 5, "a consumer cursor is beyond the published cursor (5 vs -1)"),
    (OFF_REDO + 8, 3, "a consumer cursor is beyond the published cursor (3 vs -1)"),
    (OFF_REDO, 2**62 + 1, "redo marker 4611686018427387905 is outside"),
    (OFF_CLAIM, I64_MAX, "claim cursor 9223372036854775807 is outside"),
])
def test_attach_refuses_cursors_no_ring_can_reach(tmp_path: Path, offset: int, value: int, why: str) -> None:
    path = _ring(tmp_path, [0, 1])
    _poke(path, offset, "<q", value)
    with pytest.raises(N.AttachError, match="corrupt cursors: " + why.replace("(", r"\(").replace(")", r"\)")):
        N.Ring.attach(path)


def test_a_live_ring_attaches_whatever_its_cursors(tmp_path: Path) -> None:
    path = _ring(tmp_path, [0, 1], multi=True)
    r = N.Ring.attach(path)
    for i in range(20):
        r.publish(b"m%d" % i)
        r.release(0, i)
        r.release(1, i)
    N.Ring.attach(path).close()
    r.close()


def test_cursor_arithmetic_saturates_on_a_ring_tampered_after_attach(tmp_path: Path) -> None:
    """A snapshot of a crafted ring showed lag -9223372036854775808 (a signed overflow)."""
    path = _ring(tmp_path, [0, 1])
    r = N.Ring.attach(path)
    _poke(path, OFF_PUBLISHED, "<q", I64_MAX)
    _poke(path, OFF_GATING, "<q", I64_MIN)
    _poke(path, OFF_GATING + 64, "<q", I64_MAX)
    snap = r.snapshot()
    assert snap["lag"] == [I64_MAX, 0] and snap["fill"] == I64_MAX
    assert r.next_for(1) == I64_MAX and r.next_for(0) == I64_MIN + 1
    r.close()


def test_recovery_never_stores_a_length_larger_than_a_slot(tmp_path: Path) -> None:
    path = _ring(tmp_path, [0], slot_bytes=16)
    r = N.Ring.attach(path)
    r.publish(b"0123456789abcdef")
    # a redo record of consumer 0 for sequence 0 whose length (from the file) is far beyond the slot
    _poke(path, OFF_REDO, "<qqI", 0, -1, 100_000)
    assert r.recover(0) is True
    assert r.length(0) == 16  # was 100000: every later reader had to clamp it again
    assert r.read_bytes(0) == bytes(16)  # the redo copies the consumer's scratch slot (zeros here)
    assert r.gating(0) == 0
    r.close()
