"""LaneGraph roles as native loops (``byteor._native.run_role``): bridge, router, merge and stage
roles over real lane rings, their on_full policies and counters, and exactly-once delivery across a
SIGKILL at any point (a half-published batch is completed from the batch record, never repeated)."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from byteor import _native as N
from byteor._errors import PipelineFailed
from byteor.lanes.journal import JournalReader, JournalWriter
from byteor.runtime.lanegraph._roles import Router
from byteor.runtime.lanegraph._stats import RoleStats
from byteor.spec.model import BytesKey, RoleV1

H = hashlib.sha256(b"native-roles").digest()


@pytest.fixture
def ring_dir(tmp_path: Path) -> Iterator[Path]:
    d = Path("/dev/shm") / f"byteor-rtest-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    yield d
    leftover = sorted(p.name for p in d.iterdir())
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    assert leftover == [], f"test left files behind: {leftover}"


class Lanes:
    """Lane rings and a stats file in one directory; closes and removes them at the end."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.rings: dict[str, N.Ring] = {}
        self.stats = RoleStats(str(d / "role.stats"), create=True)

    def ring(self, name: str, capacity: int = 256, slot: int = 32, multi: bool = False) -> N.Ring:
        r = N.Ring.create(str(self.d / f"{name}.ring"), capacity, slot, [0], H, multi_producer=multi)
        self.rings[name] = r
        return r

    def close(self) -> None:
        for r in self.rings.values():
            r.close()
            os.unlink(r.path)
        self.stats.close()
        os.unlink(self.d / "role.stats")


@pytest.fixture
def lanes(ring_dir: Path) -> Iterator[Lanes]:
    lz = Lanes(ring_dir)
    yield lz
    lz.close()


def everything(r: N.Ring) -> list[bytes]:
    out: list[bytes] = []
    while True:
        msgs, _d, last = r.drain(0, 100_000, N.WAIT_BACKOFF, 0)
        if last < 0:
            return out
        out.extend(msgs)


def run_role(lz: Lanes, kind: str, ins: list[str], outs: list[tuple[str, str]], **kw: Any) -> int:
    """Run a role in this thread over rings whose input is all published and stopped."""
    for name in ins:
        lz.rings[name].request_stop()
    return N.run_role(kind, [(lz.rings[n], 0) for n in ins], [(lz.rings[n], full, n) for n, full in outs],
                      lz.stats.buffer, error=PipelineFailed, **kw)


# ---- what each kind does ---------------------------------------------------------------------------

def test_bridge_moves_every_message_unchanged(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    msgs = [b"m%d" % i for i in range(200)] + [b""]
    a.publish_many(msgs)
    a.set_length(7, N.DROPPED_LENGTH)  # a dropped slot is skipped, not forwarded
    assert run_role(lanes, "bridge", ["a"], [("b", "block")]) == len(msgs) - 1
    assert everything(b) == msgs[:7] + msgs[8:]
    assert lanes.stats.messages_in == len(msgs) - 1 and lanes.stats.written(0) == len(msgs) - 1
    assert lanes.stats.heartbeat > 0


@pytest.mark.parametrize("route", ["round_robin", "bytes:1:2", "bytes:0:50"])
def test_router_routes_exactly_like_the_python_router(lanes: Lanes, route: str) -> None:
    a = lanes.ring("a", capacity=1024)
    outs = [lanes.ring(f"o{k}", capacity=1024) for k in range(3)]
    msgs = [bytes([i % 7, i % 11, i % 3]) + b"%d" % i for i in range(900)] + [b"", b"x"]
    role = RoleV1(name="r", kind="router", inputs=("a",), outputs=("o0", "o1", "o2"),
                  route=BytesKey(*map(int, route.split(":")[1:])) if route.startswith("bytes") else route)
    py = Router(role, 3)
    expected: list[list[bytes]] = [[], [], []]
    for m in msgs:
        expected[py.choose(m)].append(m)
        py.delivered()
    a.publish_many(msgs)
    kw: dict[str, Any] = {"route": "round_robin"}
    if isinstance(role.route, BytesKey):
        kw = {"route": "key", "key_offset": role.route.offset, "key_len": role.route.length}
    run_role(lanes, "router", ["a"], [(f"o{k}", "block") for k in range(3)], **kw)
    assert [everything(o) for o in outs] == expected


def test_merge_is_fair_and_keeps_each_inputs_order(lanes: Lanes) -> None:
    a, b, c = lanes.ring("a"), lanes.ring("b"), lanes.ring("c", capacity=512)
    a.publish_many([b"a%d" % i for i in range(100)])
    b.publish_many([b"b%d" % i for i in range(30)])
    run_role(lanes, "merge", ["a", "b"], [("c", "block")])
    got = everything(c)
    assert [m for m in got if m[:1] == b"a"] == [b"a%d" % i for i in range(100)]
    assert [m for m in got if m[:1] == b"b"] == [b"b%d" % i for i in range(30)]
    # one from each non-empty input in turn: the busy input never starves the other
    assert got[:60] == [x for i in range(30) for x in (b"a%d" % i, b"b%d" % i)]


def test_builtin_stage_roles(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    a.publish_many([b"\x00\x01\xff", b"abc"])
    run_role(lanes, "stage", ["a"], [("b", "block")], op="add_u8", delta=2)
    assert everything(b) == [b"\x02\x03\x01", b"cde"]


def shout(slot: memoryview, n: int) -> int:
    slot[n] = 0x21
    return n + 1


def drop_b(slot: memoryview, n: int) -> int:
    return -1 if bytes(slot[:1]) == b"b" else n


@pytest.mark.parametrize(("form", "fn", "expected"), [
    (N.FORM_INPLACE, shout, [b"a1!", b"b2!", b"a3!"]),
    (N.FORM_READONLY, drop_b, [b"a1", b"a3"]),
    (N.FORM_MAP, lambda m: m.upper() if m[:1] == b"a" else None, [b"A1", b"A3"]),
])
def test_python_stage_roles(lanes: Lanes, form: int, fn: Any, expected: list[bytes]) -> None:
    a, b = lanes.ring("a", slot=3), lanes.ring("b", slot=8)
    a.publish_many([b"a1", b"b2", b"a3"])
    run_role(lanes, "stage", ["a"], [("b", "block")], fn=fn, form=form)
    assert everything(b) == expected
    assert lanes.stats.messages_in == 3 and lanes.stats.written(0) == len(expected)


def test_a_slow_python_stage_publishes_each_message_when_done(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    a.publish_many([bytes([i]) for i in range(6)])
    published: list[int] = []

    def slow(m: bytes) -> bytes:
        published.append(b.cursor())
        time.sleep(0.01)
        return m

    run_role(lanes, "stage", ["a"], [("b", "block")], fn=slow, form=N.FORM_MAP)
    assert published == [-1, 0, 1, 2, 3, 4]  # not held back until the batch of 6 ends


def test_a_side_effect_stage_publishes_and_releases_every_message_before_the_next(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    a.publish_many([bytes([i]) for i in range(20)])
    state: list[tuple[int, int]] = []

    def effect(slot: memoryview, n: int) -> int:
        state.append((a.gating(0), b.cursor()))
        return n

    run_role(lanes, "stage", ["a"], [("b", "block")], fn=effect, form=N.FORM_READONLY, side_effect=True)
    assert state == [(k - 1, k - 1) for k in range(20)]  # a crash can repeat at most one call


def test_a_stage_exception_keeps_its_message_and_names_the_sequence(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    a.publish_many([b"ok", b"ok", b"bad", b"ok"])

    def boom(m: bytes) -> bytes:
        if m == b"bad":
            raise ValueError("no thanks")
        return m

    with pytest.raises(ValueError, match="no thanks") as info:
        run_role(lanes, "stage", ["a"], [("b", "block")], fn=boom, form=N.FORM_MAP)
    assert info.value.failed_seq == 2  # type: ignore[attr-defined]
    assert everything(b) == [b"ok", b"ok"] and a.gating(0) == 1


def test_on_full_drop_newest_counts_and_fail_names_the_lane(lanes: Lanes) -> None:
    a, b = lanes.ring("a", capacity=64), lanes.ring("b", capacity=4)
    a.publish_many([b"%d" % i for i in range(10)])
    run_role(lanes, "bridge", ["a"], [("b", "drop_newest")])
    assert everything(b) == [b"0", b"1", b"2", b"3"]
    assert lanes.stats.drops(0) == 6 and lanes.stats.written(0) == 4
    c, d = lanes.ring("c", capacity=64), lanes.ring("d", capacity=4)
    c.publish_many([b"%d" % i for i in range(10)])
    with pytest.raises(PipelineFailed, match=r"^lane 'd' is full \(on_full=fail\): the pipeline stops$"):
        run_role(lanes, "bridge", ["c"], [("d", "fail")])
    assert everything(d) == [b"0", b"1", b"2", b"3"] and c.gating(0) == 3  # nothing lost on the input


def test_a_message_too_large_for_the_output_lane(lanes: Lanes) -> None:
    a, b = lanes.ring("a", slot=32), lanes.ring("b", slot=4)
    a.publish_many([b"ok", b"far too long"])
    with pytest.raises(PipelineFailed, match=r"^message of 12 bytes exceeds lane 'b' slot_bytes=4$"):
        run_role(lanes, "bridge", ["a"], [("b", "block")])
    assert everything(b) == [b"ok"]


def test_a_blocked_role_gives_up_when_its_parent_is_gone(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b", capacity=2)
    a.publish_many([b"1", b"2", b"3"])
    a.request_stop()
    t0 = time.monotonic()
    with pytest.raises(PipelineFailed, match="lane 'b': publishing was aborted while the lane was full"):
        N.run_role("bridge", [(a, 0)], [(b, "block", "b")], lanes.stats.buffer, parent_pid=os.getpid() + 10**6,
                   error=PipelineFailed)
    assert time.monotonic() - t0 < 5


def test_mpsc_output_with_another_producer(lanes: Lanes) -> None:
    a, m = lanes.ring("a"), lanes.ring("m", capacity=64, multi=True)
    a.publish_many([b"r%d" % i for i in range(100)])
    other = N.Ring.attach(m.path)
    t = threading.Thread(target=lambda: [other.publish(b"o%d" % i) for i in range(100)])
    got: list[bytes] = []
    c = threading.Thread(target=lambda: [got.extend(m.drain(0, 1000, N.WAIT_BACKOFF, 100_000_000)[0])
                                         for _ in range(50) if len(got) < 200])
    t.start()
    c.start()
    run_role(lanes, "bridge", ["a"], [("m", "block")])
    t.join(30)
    c.join(30)
    got.extend(everything(m))
    assert [x for x in got if x[:1] == b"r"] == [b"r%d" % i for i in range(100)]
    assert sorted(x for x in got if x[:1] == b"o") == sorted(b"o%d" % i for i in range(100))
    other.close()


def test_journal_output(lanes: Lanes, tmp_path: Path) -> None:
    a = lanes.ring("a", capacity=1024)
    msgs = [b"j%04d" % i + b"." * (i % 20) for i in range(1000)]
    a.publish_many(msgs)
    a.request_stop()
    # small segments: the loop rolls over many times through the writer
    with JournalWriter(tmp_path / "j", segment_bytes=1024, slot_bytes=32) as w:
        assert w.native_segment() is not None
        N.run_role("bridge", [(a, 0)], [(w, "block", "j")], lanes.stats.buffer, error=PipelineFailed)
        assert w.next_index == len(msgs)
        w.append(b"after")  # the writer goes on where the loop stopped
    assert list(JournalReader(tmp_path / "j").records()) == [*msgs, b"after"]
    assert lanes.stats.written(0) == len(msgs)


def test_bad_arguments(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    st = lanes.stats.buffer
    with pytest.raises(ValueError, match="unknown kind 'fan'"):
        N.run_role("fan", [(a, 0)], [(b, "block", "b")], st)
    with pytest.raises(ValueError, match="a bridge role takes 1 input"):
        N.run_role("bridge", [(a, 0), (b, 0)], [(b, "block", "b")], st)
    with pytest.raises(ValueError, match="unknown on_full 'wait'"):
        N.run_role("bridge", [(a, 0)], [(b, "wait", "b")], st)
    with pytest.raises(TypeError, match=r"inputs\[0\] must be \(Ring, cell\)"):
        N.run_role("bridge", ["a"], [(b, "block", "b")], st)
    with pytest.raises(ValueError, match="stats must be"):
        N.run_role("bridge", [(a, 0)], [(b, "block", "b")], bytearray(16))
    with pytest.raises(ValueError, match="op and fn belong to stage roles"):
        N.run_role("bridge", [(a, 0)], [(b, "block", "b")], st, op="add_u8")


# ---- the batch record: a half-published batch is completed, never repeated ------------------------------

REC = 32 * 8  # byte offset of the batch record in the stats file


def rec_mix(words: list[int]) -> int:
    """The record checksum of core.c (words from the generation on)."""
    h = 0x9E3779B97F4A7C15
    for w in words[1:]:
        h ^= w
        h = (h * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        h ^= h >> 31
    return h | 1


def rings_id(rings: list[N.Ring]) -> int:
    """Which rings a record is about (core.c: their creation times, inputs then outputs)."""
    h = 0x243F6A8885A308D3
    for r in rings:
        h = ((h ^ r.created_ns) * 0x100000001B3) & (2**64 - 1)
    return h


def write_record(stats: mmap.mmap, rings: list[N.Ring], in_ranges: list[tuple[int, int]],
                 out_ranges: list[tuple[int, int]], *, torn: bool = False, last_in: int = 0, rr: int = 0) -> None:
    words = [0, 7, rr, last_in, 0, rings_id(rings)]
    for k in range(8):
        words += list(in_ranges[k]) if k < len(in_ranges) else [-1, -1]
    for j in range(8):
        words += list(out_ranges[j]) if j < len(out_ranges) else [-1, -1]
    words = [w & (2**64 - 1) for w in words]
    words[0] = rec_mix(words) ^ (1 << 40 if torn else 0)
    struct.pack_into(f"<{len(words)}Q", stats, REC, *words)


def write_slot(r: N.Ring, seq: int, data: bytes) -> None:
    """What a role killed after writing an output slot leaves behind (one cell)."""
    slot = (r.slot_bytes + 63) // 64 * 64
    stride = 8 + (r.slot_bytes + 7) // 8 * 8
    with open(r.path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        at = N.HEADER_MIN_BYTES + slot + (seq % r.capacity) * stride
        struct.pack_into("<I", mm, at, len(data))
        mm[at + 8:at + 8 + len(data)] = data


def test_a_recorded_batch_is_completed_not_repeated(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    a.publish_many([b"m0", b"m1", b"m2", b"m3", b"m4"])
    # killed after recording the batch [0..2] -> b[0..2] and before storing b's cursor
    for i in range(3):
        write_slot(b, i, b"m%d" % i)
    write_record(lanes.stats.buffer, [a, b], [(0, 2)], [(0, 2)])
    assert b.cursor() == -1 and a.gating(0) == -1
    run_role(lanes, "bridge", ["a"], [("b", "block")])
    assert everything(b) == [b"m0", b"m1", b"m2", b"m3", b"m4"]  # each exactly once


def test_a_torn_record_is_a_batch_never_published(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    a.publish_many([b"m0", b"m1", b"m2"])
    write_slot(b, 0, b"garbage")
    write_record(lanes.stats.buffer, [a, b], [(0, 1)], [(0, 1)], torn=True)
    run_role(lanes, "bridge", ["a"], [("b", "block")])
    assert everything(b) == [b"m0", b"m1", b"m2"]


def test_a_released_record_is_left_alone(lanes: Lanes) -> None:
    a, b = lanes.ring("a"), lanes.ring("b")
    a.publish_many([b"m0", b"m1", b"m2"])
    b.publish_many([b"m0", b"m1"])
    a.release(0, 1)
    write_record(lanes.stats.buffer, [a, b], [(0, 1)], [(0, 1)])
    run_role(lanes, "bridge", ["a"], [("b", "block")])
    assert everything(b) == [b"m0", b"m1", b"m2"]


def test_an_uncommitted_journal_append_is_made_again(lanes: Lanes, tmp_path: Path) -> None:
    a = lanes.ring("a")
    a.publish_many([b"m0", b"m1", b"m2"])
    with JournalWriter(tmp_path / "j", segment_bytes=4096, slot_bytes=32) as w:
        w.append(b"m0")
        a.release(0, 0)
        # killed after recording m1 as journal record 1, before committing it
        write_record(lanes.stats.buffer, [a], [(1, 1)], [(1, 1)], last_in=0)
        a.request_stop()
        N.run_role("bridge", [(a, 0)], [(w, "block", "j")], lanes.stats.buffer, error=PipelineFailed)
    assert list(JournalReader(tmp_path / "j").records()) == [b"m0", b"m1", b"m2"]


# ---- SIGKILL at any point, then a restart: 0 lost, 0 duplicated ------------------------------------------

ROLE_PROC = """
import json, mmap, os, sys
from byteor import _native as N
cfg = json.loads(sys.argv[1])
fd = os.open(cfg["stats"], os.O_RDWR)
st = mmap.mmap(fd, N.ROLE_STATS_BYTES)
ins = [(N.Ring.attach(p), c) for p, c in cfg["inputs"]]
outs = [(N.Ring.attach(p), f, n) for p, f, n in cfg["outputs"]]

def tag(m):  # a Python stage: a map that marks each message once
    return m + b"+"

kw = dict(cfg["kw"])
if cfg.get("python_stage"):
    kw.update(fn=tag, form=N.FORM_MAP)
print(N.run_role(cfg["kind"], ins, outs, st, wait=N.WAIT_SPIN, **kw), flush=True)
"""


#: Where each kill lands: a random point of the stream, or (fault injection, see core.c) right after a
#: batch record is stored, or right after a batch is published and before its inputs are released.
KILLS = ["random", "record:40", "random", "publish:40", "random", "record:3", "publish:3", "random"]


def _kill_test(lz: Lanes, kind: str, n_in: int, n_out: int, *, n: int = 100_000,
               kw: dict[str, Any] | None = None, python_stage: bool = False) -> None:
    kills = len(KILLS)
    ins = [lz.ring(f"in{k}", capacity=256, slot=16) for k in range(n_in)]
    outs = [lz.ring(f"out{j}", capacity=256, slot=16) for j in range(n_out)]
    per = n // n_in
    msgs = [[b"%d:%06d" % (k, i) for i in range(per)] for k in range(n_in)]
    cfg = {"kind": kind, "stats": lz.stats.path, "inputs": [[r.path, 0] for r in ins],
           "outputs": [[r.path, "block", f"out{j}"] for j, r in enumerate(outs)], "kw": kw or {},
           "python_stage": python_stage}
    errors: list[BaseException] = []

    def produce(k: int) -> None:
        try:
            for i in range(0, per, 100):
                ins[k].publish_many(msgs[k][i:i + 100], N.WAIT_BLOCK, 60_000_000_000)
        except BaseException as exc:
            errors.append(exc)

    got: list[list[bytes]] = [[] for _ in outs]
    done = threading.Event()

    def consume(j: int) -> None:
        while not done.is_set():
            batch, _d, _last = outs[j].drain(0, 4096, N.WAIT_BACKOFF, 50_000_000)
            got[j].extend(batch)
        got[j].extend(everything(outs[j]))

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_in)]
    threads += [threading.Thread(target=consume, args=(j,)) for j in range(n_out)]
    for t in threads:
        t.start()

    def spawn(fault: str = "random") -> subprocess.Popen[str]:
        env = dict(os.environ)
        if fault != "random":
            env["BYTEOR_FAULT_ROLE_KILL"] = fault
        return subprocess.Popen([sys.executable, "-c", ROLE_PROC, json.dumps(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    def consumed() -> int:
        return sum(r.gating(0) + 1 for r in ins)

    child = spawn(KILLS[0])
    killed_at: list[int] = []
    try:
        for k in range(kills):
            if KILLS[k] == "random":
                target = (k + 1) * n // (kills + 2)
                deadline = time.monotonic() + 60
                while consumed() < target and child.poll() is None:
                    assert time.monotonic() < deadline, f"role stuck at {consumed()}"
                    time.sleep(0.001)
                child.send_signal(signal.SIGKILL)
            _out, err = child.communicate(timeout=60)  # a fault kills the role by itself
            assert child.returncode == -signal.SIGKILL, (KILLS[k], child.returncode, err)
            killed_at.append(consumed())
            child = spawn(KILLS[k + 1] if k + 1 < kills else "random")
        for t in threads[:n_in]:
            t.join(120)
        for r in ins:
            r.request_stop()
        _out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=30)
        done.set()
        for t in threads[n_in:]:
            t.join(60)
    assert not errors and child.returncode == 0, err
    assert killed_at[-1] < n, killed_at  # really killed mid-stream
    suffix = b"+" if python_stage else b""
    expected = Counter(m + suffix for k in range(n_in) for m in msgs[k])
    seen = Counter(m for g in got for m in g)
    lost, dup = expected - seen, seen - expected
    assert not lost and not dup, f"{sum(lost.values())} lost, {sum(dup.values())} duplicated; killed at {killed_at}"
    for g in got:  # each input's order is kept on every output
        for k in range(n_in):
            mine = [m for m in g if m.startswith(b"%d:" % k)]
            assert mine == sorted(mine)


@pytest.mark.slow
def test_sigkill_bridge(lanes: Lanes) -> None:
    _kill_test(lanes, "bridge", 1, 1)


@pytest.mark.slow
def test_sigkill_router(lanes: Lanes) -> None:
    _kill_test(lanes, "router", 1, 2, kw={"route": "key", "key_offset": 5, "key_len": 3})


@pytest.mark.slow
def test_sigkill_merge(lanes: Lanes) -> None:
    _kill_test(lanes, "merge", 2, 1)


@pytest.mark.slow
def test_sigkill_python_stage(lanes: Lanes) -> None:
    _kill_test(lanes, "stage", 1, 1, python_stage=True)
