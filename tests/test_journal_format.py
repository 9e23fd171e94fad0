"""Journal lanes: format, two-phase commit, crash recovery, rollover, overrun, corruption reports.

Every behaviour runs against both segment implementations: the C hot path (``journal.c``, from
``byteor._native`` when it is hooked in, else built standalone for the test) and the Python one.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import sysconfig
import textwrap
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from byteor import ArtifactError, PipelineFailed, UsageError
from byteor.lanes import journal as jmod
from byteor.lanes.journal import (
    HEADER_BYTES,
    JournalCorrupt,
    JournalOverrun,
    JournalReader,
    JournalWriter,
    list_segments,
    segment_name,
)

ROOT = Path(__file__).resolve().parents[1]
JOURNAL_C = ROOT / "src" / "byteor" / "_native" / "journal.c"


def build_standalone(out_dir: Path) -> Path:
    """Compile journal.c as the test-only module ``_byteor_journal`` into ``out_dir``."""
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = out_dir / f"_byteor_journal{suffix}"
    cc = os.environ.get("CC", "gcc")
    subprocess.run(
        [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-fPIC", "-shared",
         "-DBYTEOR_JOURNAL_STANDALONE", f"-I{include}", str(JOURNAL_C), "-o", str(target)],
        check=True, timeout=120,
    )
    return target


@pytest.fixture(scope="session")
def native_dir(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    if jmod.native_available():
        return None
    out = tmp_path_factory.mktemp("journal_native")
    build_standalone(out)
    return out


def _load_standalone(path: Path) -> ModuleType:
    sys.path.insert(0, str(path))
    try:
        import _byteor_journal  # type: ignore[import-not-found]  # built by the fixture at run time
    finally:
        sys.path.remove(str(path))
    mod: ModuleType = _byteor_journal
    return mod


@pytest.fixture(params=["native", "python"])
def impl(request: pytest.FixtureRequest, native_dir: Path | None, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "native" and native_dir is not None:
        monkeypatch.setattr(jmod, "_NATIVE_SEGMENT", _load_standalone(native_dir).JournalSegment)
    return str(request.param)


def _writer(d: Path, impl: str, **kw: Any) -> JournalWriter:
    kw.setdefault("segment_bytes", 4096)
    kw.setdefault("slot_bytes", 200)
    return JournalWriter(d, impl=impl, **kw)


def test_round_trip_and_indexes(tmp_path: Path, impl: str) -> None:
    msgs = [bytes([i % 251]) * (i % 37) for i in range(500)]
    with _writer(tmp_path, impl) as w:
        for i, m in enumerate(msgs):
            assert w.append(m) == i
        assert w.next_index == 500
    reader = JournalReader(tmp_path)
    assert list(reader.records()) == msgs
    assert list(reader.records(490)) == msgs[490:]
    assert reader.last_n(3) == msgs[-3:]
    assert reader.last_n(10_000) == msgs
    assert reader.positions() == (0, 500)
    assert reader.verify() == 500


def test_record_bytes_on_disk(tmp_path: Path, impl: str) -> None:
    with _writer(tmp_path, impl) as w:
        w.append(b"hello")
        w.append(b"")
        w.append(b"12345678")
    raw = (tmp_path / segment_name(0)).read_bytes()
    assert raw[:8] == b"BYTEORJL"
    assert struct.unpack_from("<IIQQQ", raw, 8)[:4] == (2, 128, 0, 4096)
    assert struct.unpack_from("<I", raw, 88)[0] == zlib.crc32(raw[:88])

    def record(payload: bytes) -> bytes:
        crc = zlib.crc32(struct.pack("<I", len(payload)) + payload)
        return struct.pack("<IIII", len(payload), 1, crc, 0) + payload + bytes(-len(payload) % 8)

    assert raw[128:152] == record(b"hello")
    assert raw[152:168] == record(b"")
    assert raw[168:192] == record(b"12345678")
    assert raw[192:208] == bytes(16)


def test_rollover_creates_sealed_segments(tmp_path: Path, impl: str) -> None:
    payload = b"r" * 200
    with _writer(tmp_path, impl) as w:
        for _ in range(100):
            w.append(payload)
    segs = list_segments(tmp_path)
    assert len(segs) > 5
    headers = JournalReader(tmp_path).segments()
    assert [h.index for h in headers] == list(range(len(segs)))
    assert all(h.sealed for h in headers[:-1]) and not headers[-1].sealed
    per_segment = (4096 - HEADER_BYTES) // (16 + 200)
    assert headers[1].first_record == per_segment
    assert list(JournalReader(tmp_path).records()) == [payload] * 100


def test_reopen_continues_after_last_record(tmp_path: Path, impl: str) -> None:
    with _writer(tmp_path, impl) as w:
        for i in range(30):
            w.append(b"a%d" % i)
    with _writer(tmp_path, impl) as w:
        assert w.next_index == 30
        assert w.append(b"b") == 30
    assert list(JournalReader(tmp_path).records(29)) == [b"a29", b"b"]


CHILD = textwrap.dedent(
    """
    import os, sys, time
    native_dir, impl, d = sys.argv[1], sys.argv[2], sys.argv[3]
    from byteor.lanes import journal as jmod
    if native_dir:
        sys.path.insert(0, native_dir)
        import _byteor_journal
        jmod._NATIVE_SEGMENT = _byteor_journal.JournalSegment
    w = jmod.JournalWriter(d, segment_bytes=4096, slot_bytes=200, impl=impl)
    for i in range(40):
        w.append(b"rec-%d" % i)
    view = w.reserve(100)
    view[:] = b"Z" * 100
    sys.stdout.write("reserved\\n")
    sys.stdout.flush()
    time.sleep(60)
    """
)


def test_sigkill_between_reserve_and_commit(tmp_path: Path, impl: str, native_dir: Path | None) -> None:
    nd = str(native_dir) if (impl == "native" and native_dir is not None) else ""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, nd, impl, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "reserved"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    expected = [b"rec-%d" % i for i in range(40)]
    reader = JournalReader(tmp_path)
    assert list(reader.records()) == expected  # stops cleanly before the uncommitted record
    seg = (tmp_path / list_segments(tmp_path)[-1][1].name).read_bytes()
    assert b"Z" * 100 in seg  # the half-written record is there, not visible
    with _writer(tmp_path, impl) as w:  # the lock died with the writer
        assert w.append(b"after") == 40
    assert list(reader.records()) == [*expected, b"after"]
    seg = (tmp_path / list_segments(tmp_path)[-1][1].name).read_bytes()
    assert b"Z" * 8 not in seg  # the tail was zeroed before appending


def test_reader_follows_live_writer_across_rollover(tmp_path: Path, impl: str) -> None:
    w = _writer(tmp_path, impl)
    sub = JournalReader(tmp_path).subscribe()
    got: list[bytes] = []
    for i in range(200):
        w.append(b"m%d" % i)
        if i % 7 == 0:
            got.extend(sub.poll())
    got.extend(sub.poll(10_000))
    assert got == [b"m%d" % i for i in range(200)]
    assert sub.position == 200
    assert sub.poll() == []
    sub.close()
    w.close()


def test_overrun_detected_by_slow_subscriber(tmp_path: Path, impl: str) -> None:
    w = _writer(tmp_path, impl, max_segments=2)
    sub = JournalReader(tmp_path).subscribe()
    assert w.append(b"x" * 150) == 0
    assert sub.poll(1) == [b"x" * 150]
    for _ in range(200):
        w.append(b"y" * 150)
    # the subscriber still holds segment 0 mapped, so it gets the rest of it, then learns of the gap
    rest = sub.poll(10_000)
    assert rest == [b"y" * 150] * (sub.position - 1)
    with pytest.raises(JournalOverrun) as info:
        sub.poll()
    assert info.value.position == sub.position and info.value.oldest > sub.position
    oldest, end = JournalReader(tmp_path).positions()
    assert end == 201 and oldest == info.value.oldest
    with pytest.raises(JournalOverrun):
        list(JournalReader(tmp_path).records(0))
    assert len(list(JournalReader(tmp_path).records(oldest))) == end - oldest
    sub.close()
    w.close()


def test_corrupt_segment_header_reports_offset(tmp_path: Path, impl: str) -> None:
    with _writer(tmp_path, impl) as w:
        w.append(b"ok")
    path = tmp_path / segment_name(0)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the segment index: caught by the header checksum
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt) as info:
        list(JournalReader(tmp_path).records())
    assert info.value.offset == 88 and info.value.segment == str(path)
    assert "byte 88" in str(info.value) and isinstance(info.value, ArtifactError)
    data[0:8] = b"NOTAJRNL"
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="byte 0: bad magic"):
        JournalReader(tmp_path).verify()


def test_corrupt_record_header_reports_offset(tmp_path: Path, impl: str) -> None:
    with _writer(tmp_path, impl) as w:
        for _ in range(3):
            w.append(b"abcdefgh")
    path = tmp_path / segment_name(0)
    data = bytearray(path.read_bytes())
    third = HEADER_BYTES + 2 * (16 + 8)
    struct.pack_into("<I", data, third + 4, 0x81)  # third record: unknown flag bit
    path.write_bytes(bytes(data))
    sub = JournalReader(tmp_path).subscribe()
    assert sub.poll() == [b"abcdefgh"] * 2  # what precedes the damage is delivered first
    with pytest.raises(JournalCorrupt) as info:
        sub.poll()
    assert info.value.offset == third and "unknown record flag bits" in str(info.value)
    sub.close()
    struct.pack_into("<II", data, third, 1 << 30, 1)  # length past the segment end
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=f"byte {third}: record length"):
        _writer(tmp_path, impl)


@pytest.mark.parametrize("posture", ["none", "segment", "always"])
def test_fsync_postures_write_the_same_records(tmp_path: Path, impl: str, posture: str) -> None:
    with _writer(tmp_path, impl, fsync=posture) as w:
        for i in range(60):
            w.append(b"p%d" % i)
        w.flush()
    assert list(JournalReader(tmp_path).records()) == [b"p%d" % i for i in range(60)]


def test_bad_inputs(tmp_path: Path, impl: str) -> None:
    with pytest.raises(UsageError, match="fsync posture 'sometimes'"):
        JournalWriter(tmp_path / "a", fsync="sometimes")
    with pytest.raises(UsageError, match="segment_bytes 128"):
        JournalWriter(tmp_path / "b", segment_bytes=128, slot_bytes=256)
    with _writer(tmp_path / "c", impl) as w:
        with pytest.raises(UsageError, match="exceeds slot_bytes=200"):
            w.append(b"x" * 201)
        with pytest.raises(PipelineFailed, match="already has a live writer"):
            _writer(tmp_path / "c", impl)
        with pytest.raises(UsageError, match="without a reservation"):
            w.commit()
    with pytest.raises(UsageError, match="does not exist"):
        JournalReader(tmp_path / "missing")


def test_zero_copy_reserve_commit(tmp_path: Path, impl: str) -> None:
    with _writer(tmp_path, impl) as w:
        view = w.reserve(5)
        view[:] = b"abcde"
        assert list(JournalReader(tmp_path).records()) == []
        assert w.commit() == 0
        with pytest.raises(ValueError):
            view[0] = 1  # released by commit
    assert list(JournalReader(tmp_path).records()) == [b"abcde"]


def test_journal_c_builds_standalone(tmp_path: Path) -> None:
    """journal.c also compiles on its own (-Werror) and its records read back through the reader."""
    import mmap

    mod = _load_standalone(build_standalone(tmp_path).parent)
    buf = mmap.mmap(-1, 4096)
    seg = mod.JournalSegment(buf)
    assert seg.append(b"abc") == 128 and seg.offset == 152
    at = seg.reserve(4)
    assert seg.scan(at) == (0, 4, at)  # reserved, not committed: invisible
    seg.commit(at)
    assert seg.scan(128) == (1, 3, 152) and seg.scan(at) == (1, 4, 176)
    assert struct.unpack_from("<I", buf, 128 + 8)[0] == zlib.crc32(struct.pack("<I", 3) + b"abc")
    seg.release()
    buf.close()
