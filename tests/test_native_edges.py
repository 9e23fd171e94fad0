"""Batched edges of the native core: ``Ring.drain``, ``Ingest`` (framed input from a file descriptor
into one ring or N shard rings, parsed in C) and ``Egress`` (framed output of a ring cell into a
file descriptor). Each framing is compared with the Python reference it replaces; bad input names
the line, byte offset or message; a reader that goes away ends the egress with an error, never with
SIGPIPE."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byteor import _native as N
from byteor._errors import UsageError
from byteor.edges.framing import FrameParser, encoder
from byteor.runtime.sharding import Router
from byteor.spec.model import BytesKey, SingleRingSpecV1, StageV1

H = hashlib.sha256(b"native-edges").digest()


@pytest.fixture
def ring_dir(tmp_path: Path) -> Iterator[Path]:
    d = Path("/dev/shm") / f"byteor-etest-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    yield d
    leftover = sorted(p.name for p in d.iterdir())
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    assert leftover == [], f"test left files behind: {leftover}"


def new_ring(ring_dir: Path, name: str = "r", capacity: int = 4096, slot: int = 64, cells: int = 1) -> N.Ring:
    return N.Ring.create(str(ring_dir / f"{name}.ring"), capacity, slot, [0] * cells, H)


def drop_ring(r: N.Ring) -> None:
    path = r.path
    r.close()
    os.unlink(path)


def collect(r: N.Ring, c: int = 0) -> list[bytes]:
    """Everything published so far to cell c (drain until it returns nothing)."""
    out: list[bytes] = []
    while True:
        msgs, _dropped, last = r.drain(c, 10_000, N.WAIT_BACKOFF, 0)
        if last < 0:
            return out
        out.extend(msgs)


# ---- the Python framings (byteor.edges.framing) are the reference ----------------------------------

def ref_parse(fmt: str, data: bytes, *, slot: int | None = None,
              chunk: int = 7) -> tuple[list[bytes], str | None]:
    """What FrameParser makes of ``data`` fed in small chunks: (messages, error text or None)."""
    parser = FrameParser(fmt, max_message_bytes=slot)
    out: list[bytes] = []
    for i in range(0, len(data), chunk):
        out += parser.feed(data[i:i + chunk])
    out += parser.finish()
    return out, str(parser.error) if parser.error is not None else None


def ref_lines(data: bytes) -> list[bytes]:
    return ref_parse("lines", data)[0]


def ref_hex(data: bytes) -> list[bytes]:
    return ref_parse("hex", data)[0]


def ref_encode(fmt: str, msgs: list[bytes]) -> bytes:
    return encoder(fmt)(msgs)


def ingest_bytes(ring_dir: Path, data: bytes, framing: str, rings: list[N.Ring], **kw: object) -> N.Ingest:
    path = ring_dir / "input.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        ing = N.Ingest(fd, framing, rings, **kw)  # type: ignore[arg-type]
        ing.run()
        return ing
    finally:
        os.close(fd)
        path.unlink()


# ---- codecs -------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=2**32 - 1))
def test_crc32_is_zlibs(data: bytes, start: int) -> None:
    assert N.crc32(data) == zlib.crc32(data)
    assert N.crc32(data, start) == zlib.crc32(data, start)


INTERESTING = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED,
               0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF]


def test_utf8_replace_matches_cpython_on_every_short_sequence() -> None:
    for a in INTERESTING:
        for b in INTERESTING:
            for c in INTERESTING:
                for data in (bytes([a]), bytes([a, b]), bytes([a, b, c]), bytes([a, b, c, 0x80]),
                             bytes([a, b, c, 0xBF, 0x41])):
                    assert N.utf8_replace(data) == data.decode("utf-8", "replace").encode(), data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_utf8_replace_matches_cpython(data: bytes) -> None:
    assert N.utf8_replace(data) == data.decode("utf-8", "replace").encode()


# ---- drain --------------------------------------------------------------------------------------------

def test_drain_without_release_leaves_the_cell_for_the_caller(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    r.publish_many([b"a", b"bb"])
    assert r.drain(0, 100, N.WAIT_BACKOFF, 0, release=False) == ([b"a", b"bb"], 0, 1)
    assert r.gating(0) == -1  # not released: the next call sees the same messages
    assert r.drain(0, 100, N.WAIT_BACKOFF, 0, release=False) == ([b"a", b"bb"], 0, 1)
    r.release(0, 1)
    assert r.drain(0, 100, N.WAIT_BACKOFF, 0, release=False) == ([], 0, -1)
    drop_ring(r)


def test_drain_takes_everything_available_and_releases_it(ring_dir: Path) -> None:
    r = new_ring(ring_dir, cells=2)
    r.publish_many([b"a", b"bb", b"ccc", b"dddd"])
    r.set_length(1, N.DROPPED_LENGTH)
    assert r.drain(0, 100, N.WAIT_BACKOFF, 0) == ([b"a", b"ccc", b"dddd"], 1, 3)
    assert r.gating(0) == 3 and r.gating(1) == -1
    assert r.drain(0, 100, N.WAIT_BACKOFF, 0) == ([], 0, -1)  # nothing left: no wait with timeout 0
    assert r.drain(1, 2, N.WAIT_BACKOFF, 0) == ([b"a"], 1, 1)  # max_n counts dropped ones too
    t0 = time.monotonic()
    assert r.drain(0, 100, N.WAIT_BLOCK, 50_000_000) == ([], 0, -1)
    assert time.monotonic() - t0 >= 0.04
    threading.Timer(0.05, lambda: r.publish(b"late")).start()
    assert r.drain(0, 100, N.WAIT_BLOCK, 5_000_000_000) == ([b"late"], 0, 4)
    r.request_stop()
    assert r.drain(0, 100, N.WAIT_BLOCK, -1) == ([], 0, -1)  # stopped and drained: returns at once
    with pytest.raises(ValueError, match="max_n must be >= 1"):
        r.drain(0, 0)
    with pytest.raises(IndexError):
        r.drain(2, 10)
    drop_ring(r)


# ---- Ingest -----------------------------------------------------------------------------------------

LINES_INPUT = b"alpha\n\nbeta gamma\r\n" + bytes(range(1, 10)) + b"\n" + b"x" * 64 + b"\nlast-without-newline"


def test_ingest_lines(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    ing = ingest_bytes(ring_dir, LINES_INPUT, "lines", [r])
    assert collect(r) == ref_lines(LINES_INPUT)
    assert ing.messages == 6 and ing.eof and ing.bytes_read == len(LINES_INPUT) and ing.lines == 6
    drop_ring(r)


def test_ingest_hex(ring_dir: Path) -> None:
    data = b"00ff10\n\n  DE ad\tbe EF  \r\n\x0b\n0a0B0c\n   \n" + b"ab" * 64 + b"\n" + b"0102"
    r = new_ring(ring_dir)
    ing = ingest_bytes(ring_dir, data, "hex", [r])
    assert collect(r) == ref_hex(data)
    assert ing.messages == 5 and ing.lines == 8
    drop_ring(r)


@pytest.mark.parametrize(("data", "text"), [
    (b"00\nzz\n11\n", "--input line 2 is not valid hex: invalid character 'z'"),
    (b"00\n\n0\n", "--input line 3 is not valid hex: odd number of hex digits (1)"),
    (b"0 0 0\n", "--input line 1 is not valid hex: odd number of hex digits (3)"),
    (b"00\n0\xe9\n", "--input line 2 is not valid hex: invalid character '\ufffd'"),
    (b"'a\n", "--input line 1 is not valid hex: invalid character \"'\""),
    (b"a\x00\n", "--input line 1 is not valid hex: invalid character '\\x00'"),
    (b"00\n" + b"ab" * 65 + b"\n", "--input line 2: message of 65 bytes exceeds slot_bytes=64"),
])
def test_ingest_hex_errors_name_the_line(ring_dir: Path, data: bytes, text: str) -> None:
    r = new_ring(ring_dir)
    with pytest.raises(ValueError) as info:
        ingest_bytes(ring_dir, data, "hex", [r])
    assert str(info.value) == text
    assert collect(r) == ([b"\x00"] if data.startswith(b"00\n") else [])  # what came before is published
    drop_ring(r)


def test_ingest_lines_longer_than_the_slot(ring_dir: Path) -> None:
    r = new_ring(ring_dir, slot=8)
    with pytest.raises(ValueError, match=r"^--input line 2: message of 9 bytes exceeds slot_bytes=8$"):
        ingest_bytes(ring_dir, b"ok\n123456789", "lines", [r])
    assert collect(r) == [b"ok"]
    with pytest.raises(ValueError, match=r"^in line 3: message of more than 8 bytes exceeds slot_bytes=8$"):
        ingest_bytes(ring_dir, b"a\nb\n" + b"y" * 10_000 + b"\nmore\n", "lines", [r], label="in", chunk_bytes=4096)
    assert collect(r) == [b"a", b"b"]
    drop_ring(r)


def len32(msgs: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(m)) + m for m in msgs)


def test_ingest_len32(ring_dir: Path) -> None:
    msgs = [b"", b"a", bytes(range(64)), b"\n\n", b"x" * 17]
    r = new_ring(ring_dir)
    ing = ingest_bytes(ring_dir, len32(msgs), "len32", [r], chunk_bytes=4096)
    assert collect(r) == msgs and ing.messages == 5
    drop_ring(r)


@pytest.mark.parametrize(("tail", "text"), [
    (b"\x05\x00", "--input len32: truncated length prefix at byte 12"),
    (b"\x05\x00\x00\x00abc", "--input len32: message at byte 12 announces 5 bytes, only 3 follow"),
    (b"\x41\x00\x00\x00" + b"z" * 65,
     "--input len32: message 2 at byte 12 is 65 bytes, larger than the slot (64 bytes)"),
])
def test_ingest_len32_errors_name_the_offset(ring_dir: Path, tail: bytes, text: str) -> None:
    r = new_ring(ring_dir)
    with pytest.raises(ValueError) as info:
        ingest_bytes(ring_dir, len32([b"a", b"bcd"]) + tail, "len32", [r])
    assert str(info.value) == text
    assert collect(r) == [b"a", b"bcd"]  # everything before the bad frame was published
    drop_ring(r)


HEXISH = st.sampled_from(list(b"0123456789abcdefABCDEF \t\r\x0b\x0c\x1cxz'\x00\xe9\n"))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["lines", "hex", "len32"]), st.data())
def test_ingest_parses_exactly_as_the_python_framing(fmt: str, data: st.DataObject) -> None:
    """Messages and the error (text included) are FrameParser's, for any input."""
    if fmt == "hex":
        raw = bytes(data.draw(st.lists(HEXISH, max_size=120)))
    elif fmt == "lines":
        raw = b"\n".join(data.draw(st.lists(st.binary(max_size=20), max_size=12)))
        raw += data.draw(st.sampled_from([b"", b"\n", b"tail"]))
    else:
        msgs = data.draw(st.lists(st.binary(max_size=70), max_size=8))  # some larger than the slot (64)
        raw = b"".join(struct.pack("<I", len(m)) + m for m in msgs)
        raw = raw[: len(raw) - data.draw(st.integers(0, 3))] + data.draw(st.sampled_from([b"", b"\xff\x00\x00\x00"]))
    expected, error = ref_parse(fmt, raw, slot=64 if fmt == "len32" else None)
    d = Path("/dev/shm") / f"byteor-etest-h-{os.getpid()}"
    d.mkdir(exist_ok=True)
    r = N.Ring.create(str(d / "h.ring"), 256, 64, [0], H)
    try:
        path = d / "in.bin"
        path.write_bytes(raw)
        fd = os.open(path, os.O_RDONLY)
        got_error = None
        try:
            N.Ingest(fd, fmt, [r], error=UsageError, chunk_bytes=4096).run()
        except UsageError as exc:
            got_error = str(exc)
        finally:
            os.close(fd)
            path.unlink()
        assert (collect(r), got_error) == (expected, error)
    finally:
        r.close()
        os.unlink(d / "h.ring")
        d.rmdir()


def test_ingest_raises_the_given_error_class(ring_dir: Path) -> None:
    class Usage(Exception):
        pass

    r = new_ring(ring_dir)
    with pytest.raises(Usage, match=r"^--in line 1 is not valid hex"):
        ingest_bytes(ring_dir, b"xyz\n", "hex", [r], error=Usage, label="--in")
    drop_ring(r)


@pytest.mark.parametrize(("route", "ordering", "key"), [
    ("round_robin", "unordered", None),
    ("key", "per_key", BytesKey(2, 3)),
    ("key", "per_key", BytesKey(0, 40)),  # a window longer than most messages hashes what is there
])
def test_ingest_routes_exactly_like_the_shard_router(ring_dir: Path, route: str, ordering: str,
                                                      key: BytesKey | None) -> None:
    shards = 3
    msgs = [b"k%d-%s" % (i % 7, b"z" * (i % 5)) for i in range(500)] + [b"", b"k"]
    spec = SingleRingSpecV1(name="t", stages=(StageV1(id="s", op="identity"),), shards=shards, ordering=ordering,
                            shard_key=key)
    router = Router(spec)
    expected: list[list[bytes]] = [[] for _ in range(shards)]
    for m in msgs:
        expected[router.route(m)].append(m)
    rings = [new_ring(ring_dir, f"s{k}") for k in range(shards)]
    ing = ingest_bytes(ring_dir, len32(msgs), "len32", rings, route=route, key_offset=key.offset if key else 0,
                       key_len=key.length if key else 0)
    assert [collect(r) for r in rings] == expected
    assert list(ing.per_ring) == [len(e) for e in expected]
    for r in rings:
        drop_ring(r)


def test_ingest_waits_for_room_and_loses_nothing(ring_dir: Path) -> None:
    r = new_ring(ring_dir, capacity=16)
    msgs = [b"m%06d" % i for i in range(20_000)]
    got: list[bytes] = []

    def consume() -> None:
        while len(got) < len(msgs):
            batch, _d, _last = r.drain(0, 7, N.WAIT_BACKOFF, 5_000_000_000)
            got.extend(batch)

    t = threading.Thread(target=consume)
    t.start()
    ingest_bytes(ring_dir, b"\n".join(msgs) + b"\n", "lines", [r], wait=N.WAIT_BLOCK)
    t.join(60)
    assert got == msgs
    drop_ring(r)


def test_ingest_from_a_pipe_stops_from_another_thread(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    rfd, wfd = os.pipe()
    os.write(wfd, b"one\ntwo\nthr")  # the writer stays open: the input never ends
    ing = N.Ingest(rfd, "lines", [r])
    threading.Timer(0.2, ing.stop).start()
    t0 = time.monotonic()
    assert ing.run() == 2
    assert time.monotonic() - t0 < 5 and not ing.eof
    assert collect(r) == [b"one", b"two"]
    os.write(wfd, b"ee\n")
    os.close(wfd)
    drop_ring(r)
    os.close(rfd)


def test_ingest_stops_from_a_signal_handler(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    rfd, wfd = os.pipe()
    os.write(wfd, b"a\nb\n")
    ing = N.Ingest(rfd, "lines", [r])
    old = signal.signal(signal.SIGALRM, lambda signum, frame: ing.stop())
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        assert ing.run() == 2  # blocked on the silent pipe in this (the main) thread
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert collect(r) == [b"a", b"b"]
    os.close(wfd)
    os.close(rfd)
    drop_ring(r)


def test_ingest_a_signal_handler_that_raises_ends_run(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    rfd, wfd = os.pipe()
    ing = N.Ingest(rfd, "lines", [r])

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            ing.run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    os.close(wfd)
    os.close(rfd)
    drop_ring(r)


def test_ingest_bad_arguments(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    with pytest.raises(ValueError, match="unknown input framing 'raw'"):
        N.Ingest(0, "raw", [r])
    with pytest.raises(ValueError, match="unknown route 'hash'"):
        N.Ingest(0, "lines", [r], route="hash")
    with pytest.raises(ValueError, match="route single needs exactly one ring, got 2"):
        N.Ingest(0, "lines", [r, r])
    with pytest.raises(TypeError, match=r"rings\[0\] is str, not a Ring"):
        N.Ingest(0, "lines", ["x"])
    with pytest.raises(TypeError, match="error must be an exception class"):
        N.Ingest(0, "lines", [r], error=42)
    drop_ring(r)
    with pytest.raises(ValueError, match="ring is closed"):
        N.Ingest(0, "lines", [r])


def test_ingest_read_error_is_an_oserror(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    fd = os.open(ring_dir, os.O_RDONLY)  # a directory: read() fails with EISDIR
    with pytest.raises(IsADirectoryError, match="--input: read failed"):
        N.Ingest(fd, "lines", [r]).run()
    os.close(fd)
    drop_ring(r)


# ---- Egress -----------------------------------------------------------------------------------------

EGRESS_MSGS = [b"", b"plain", bytes(range(256))[:64], b"caf\xc3\xa9", b"bad\xff\xfe utf8 \xed\xa0\x80",
               b"with\nnewline", b"\xf0\x9f\x98\x80"]


@pytest.mark.parametrize("fmt", ["hex", "lines", "ascii", "raw", "len32"])
def test_egress_framings_match_the_python_encoders(ring_dir: Path, fmt: str) -> None:
    r = new_ring(ring_dir)
    r.publish_many(EGRESS_MSGS * 50)
    r.set_length(3, N.DROPPED_LENGTH)
    r.request_stop()
    out = ring_dir / "out.bin"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    eg = N.Egress(fd, fmt, r, 0, buffer_bytes=4096)  # small buffer: many flushes
    assert eg.run() == len(EGRESS_MSGS) * 50 - 1
    os.close(fd)
    expected = [m for i, m in enumerate(EGRESS_MSGS * 50) if i != 3]
    assert out.read_bytes() == ref_encode(fmt, expected)
    assert eg.dropped == 1 and eg.last_seq == len(EGRESS_MSGS) * 50 - 1 and r.gating(0) == eg.last_seq
    assert eg.bytes_written == out.stat().st_size
    out.unlink()
    drop_ring(r)


def test_len32_round_trips_through_egress_and_ingest(ring_dir: Path) -> None:
    msgs = [bytes((i * 13 + j) % 256 for j in range(i % 65)) for i in range(3000)]
    a = new_ring(ring_dir, "a")
    a.publish_many(msgs)
    a.request_stop()
    out = ring_dir / "rt.len32"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    N.Egress(fd, "len32", a, 0).run()
    os.close(fd)
    b = new_ring(ring_dir, "b")
    fd = os.open(out, os.O_RDONLY)
    N.Ingest(fd, "len32", [b]).run()
    os.close(fd)
    assert collect(b) == msgs
    out.unlink()
    drop_ring(a)
    drop_ring(b)


def test_egress_delivers_to_a_pipe_while_the_ring_is_idle(ring_dir: Path) -> None:
    """A message that is finished reaches the reader within a second, though more may follow."""
    r = new_ring(ring_dir)
    rfd, wfd = os.pipe()
    eg = N.Egress(wfd, "lines", r, 0)
    t = threading.Thread(target=eg.run)
    t.start()
    r.publish(b"first")
    t0 = time.monotonic()
    assert os.read(rfd, 100) == b"first\n"
    assert time.monotonic() - t0 < 1.0
    deadline = time.monotonic() + 5
    while eg.last_seq < 0:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert eg.last_seq == 0 and r.gating(0) == 0
    eg.stop()
    t.join(10)
    assert not t.is_alive()
    os.close(rfd)
    os.close(wfd)
    drop_ring(r)


def test_egress_a_busy_stream_reaches_the_reader_within_a_second(ring_dir: Path) -> None:
    r = new_ring(ring_dir, capacity=1 << 16)
    rfd, wfd = os.pipe()
    eg = N.Egress(wfd, "raw", r, 0, flush_interval_ns=50_000_000, buffer_bytes=1 << 24)
    t = threading.Thread(target=eg.run)
    stop = threading.Event()
    first: list[float] = []

    def produce() -> None:  # never idle for long: the idle flush alone would not explain the writes
        while not stop.is_set():
            r.publish_many([b"x" * 64] * 64)
        r.request_stop()

    def reader() -> None:
        while True:
            b = os.read(rfd, 1 << 20)
            if not b:
                return
            if not first:
                first.append(time.monotonic())

    threads = [t, threading.Thread(target=produce), threading.Thread(target=reader)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    deadline = t0 + 5
    while not first and time.monotonic() < deadline:
        time.sleep(0.005)
    stop.set()
    threads[1].join(30)
    t.join(30)
    os.close(wfd)
    threads[2].join(30)
    os.close(rfd)
    assert first and first[0] - t0 < 1.0
    drop_ring(r)


def test_egress_handles_partial_writes_to_a_slow_nonblocking_reader(ring_dir: Path) -> None:
    r = new_ring(ring_dir, capacity=1024)
    msgs = [b"%05d:" % i + b"p" * (i % 50) for i in range(20_000)]
    rfd, wfd = os.pipe()
    fcntl.fcntl(wfd, fcntl.F_SETFL, fcntl.fcntl(wfd, fcntl.F_GETFL) | os.O_NONBLOCK)
    eg = N.Egress(wfd, "len32", r, 0, buffer_bytes=1 << 16)
    t = threading.Thread(target=eg.run)
    t.start()
    chunks: list[bytes] = []

    def reader() -> None:
        while True:
            b = os.read(rfd, 3000)  # small reads: the writer sees a full pipe and short writes
            if not b:
                return
            chunks.append(b)
            time.sleep(0.0002)

    rt = threading.Thread(target=reader)
    rt.start()
    r.publish_many(msgs)
    r.request_stop()
    t.join(60)
    os.close(wfd)
    rt.join(60)
    os.close(rfd)
    assert b"".join(chunks) == ref_encode("len32", msgs)
    drop_ring(r)


def test_egress_reader_gone_is_a_clear_error(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    r.publish_many([b"a", b"b"])
    rfd, wfd = os.pipe()
    os.close(rfd)
    eg = N.Egress(wfd, "hex", r, 0, label="--output")
    with pytest.raises(BrokenPipeError, match="--output: write failed: the reader closed it"):
        eg.run()
    assert eg.last_seq == -1 and r.gating(0) == -1  # nothing left: nothing released
    os.close(wfd)
    drop_ring(r)


EPIPE_CHILD = """
import os, signal, sys
from byteor import _native as N
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # what a C program or an embedded interpreter has
r = N.Ring.attach(sys.argv[1])
rfd, wfd = os.pipe()
os.close(rfd)
try:
    N.Egress(wfd, "lines", r, 0).run()
except BrokenPipeError as exc:
    print("error:", exc)
"""


def test_egress_reader_gone_never_kills_the_process_with_sigpipe(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    r.publish(b"x")
    proc = subprocess.run([sys.executable, "-c", EPIPE_CHILD, r.path], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "error: [Errno 32] --output-file: write failed: the reader closed it (broken pipe)" in proc.stdout
    drop_ring(r)


def test_egress_stop_from_another_thread_while_idle(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    out = ring_dir / "o.txt"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    eg = N.Egress(fd, "lines", r, 0)
    r.publish(b"one")
    threading.Timer(0.2, eg.stop).start()
    assert eg.run() == 1
    os.close(fd)
    assert out.read_bytes() == b"one\n"
    out.unlink()
    drop_ring(r)


def test_egress_bad_arguments(ring_dir: Path) -> None:
    r = new_ring(ring_dir)
    with pytest.raises(ValueError, match="unknown output framing 'json'"):
        N.Egress(1, "json", r, 0)
    with pytest.raises(IndexError, match="consumer index 1"):
        N.Egress(1, "hex", r, 1)
    with pytest.raises(ValueError, match="flush_interval_ns 0 outside"):
        N.Egress(1, "hex", r, 0, flush_interval_ns=0)
    with pytest.raises(TypeError):
        N.Egress(1, "hex", "ring", 0)
    drop_ring(r)
