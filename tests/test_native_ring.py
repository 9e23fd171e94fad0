"""byteor._native.Ring: create/attach checks, producer/consumer protocol, backpressure, deps."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import _native as N

H = hashlib.sha256(b"test-spec").digest()


@pytest.fixture
def ring_dir(tmp_path: Path) -> Iterator[Path]:
    d = Path("/dev/shm") / f"byteor-test-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    yield d
    leftover = list(d.iterdir())
    for p in leftover:
        p.unlink()
    d.rmdir()


def test_create_attach_properties(ring_dir: Path) -> None:
    p = str(ring_dir / "a.ring")
    r = N.Ring.create(p, 16, 64, [0, 1, 3], H)
    assert (r.capacity, r.slot_bytes, r.n_consumers, r.deps) == (16, 64, 3, (0, 1, 3))
    assert r.spec_hash == H and not r.multi_producer and r.path == p
    assert os.stat(p).st_mode & 0o777 == 0o600
    a = N.Ring.attach(p, expect_hash=H)
    assert (a.capacity, a.slot_bytes, a.deps, a.created_ns) == (16, 64, (0, 1, 3), r.created_ns)
    assert a.cursor() == -1 and [a.gating(i) for i in range(3)] == [-1, -1, -1]
    with pytest.raises(FileExistsError):
        N.Ring.create(p, 16, 64, [0], H)
    a.close()
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r.cursor()
    os.unlink(p)


@pytest.mark.parametrize(("capacity", "slot", "deps", "msg"), [
    (3, 8, [0], "power of two"),
    (1, 8, [0], "power of two"),
    (8, 0, [0], "slot_bytes"),
    (8, 8, [], "1..8 consumers"),
    (8, 8, [0] * 9, "1..8 consumers"),
    (8, 8, [1], "not its own"),
    (8, 8, [2, 1], "cycle|not its own"),
    (8, 8, [0, 4], "other consumers"),
])
def test_create_rejects_bad_geometry(ring_dir: Path, capacity: int, slot: int, deps: list[int],
                                     msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        N.Ring.create(str(ring_dir / "bad.ring"), capacity, slot, deps, H)
    assert not (ring_dir / "bad.ring").exists()


def test_create_rejects_cycle(ring_dir: Path) -> None:
    with pytest.raises(ValueError, match="cycle"):
        N.Ring.create(str(ring_dir / "c.ring"), 8, 8, [2, 1 << 0 | 0, 1 << 1], H)


def test_attach_failures_say_why(ring_dir: Path) -> None:
    missing = ring_dir / "missing.ring"
    with pytest.raises(N.AttachError, match="cannot open"):
        N.Ring.attach(str(missing))
    foreign = ring_dir / "foreign.ring"
    foreign.write_bytes(b"NOTARING" + bytes(4096))
    with pytest.raises(N.AttachError, match="foreign file"):
        N.Ring.attach(str(foreign))
    short = ring_dir / "short.ring"
    short.write_bytes(b"BYTEORRG" + bytes(100))
    with pytest.raises(N.AttachError, match="truncated"):
        N.Ring.attach(str(short))
    good = str(ring_dir / "good.ring")
    N.Ring.create(good, 8, 32, [0], H).close()
    with pytest.raises(N.AttachError, match="spec hash mismatch"):
        N.Ring.attach(good, expect_hash=hashlib.sha256(b"other").digest())
    data = bytearray(Path(good).read_bytes())
    # truncated body: header intact, slots cut off
    cut = ring_dir / "cut.ring"
    cut.write_bytes(bytes(data[: len(data) - 8]))
    with pytest.raises(N.AttachError, match="truncated"):
        N.Ring.attach(str(cut))
    # another layout version
    wrong = bytearray(data)
    struct.pack_into("<I", wrong, 8, 99)
    ver = ring_dir / "ver.ring"
    ver.write_bytes(bytes(wrong))
    with pytest.raises(N.AttachError, match="layout version 99"):
        N.Ring.attach(str(ver))
    # a corrupted header field
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 16, 12)  # capacity 12: not a power of two
    corrupt = ring_dir / "corrupt.ring"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(N.AttachError, match="corrupt header"):
        N.Ring.attach(str(corrupt))
    for p in ring_dir.iterdir():
        p.unlink()


def test_publish_read_round_trip(ring_dir: Path) -> None:
    p = str(ring_dir / "rt.ring")
    with N.Ring.create(p, 8, 16, [0], H) as r:
        assert r.publish(b"hello") == 0
        assert r.publish(bytearray(b"world!"), N.WAIT_SPIN, 1000) == 1
        assert r.publish(memoryview(b"xx"), wait=N.WAIT_BLOCK, timeout_ns=5) == 2
        assert r.publish(b"") == 3
        with pytest.raises(ValueError, match="exceeds slot_bytes 16"):
            r.publish(b"x" * 17)
        with pytest.raises(TypeError):
            r.publish("text")  # type: ignore[arg-type]  # deliberately not bytes-like
        assert r.cursor() == 3
        assert r.wait_for(0, 0, N.WAIT_SPIN, 0) == 3
        view = r.read(1)
        assert view.readonly and bytes(view) == b"world!"
        assert [r.read_bytes(s) for s in range(4)] == [b"hello", b"world!", b"xx", b""]
        assert r.length(0) == 5
        with pytest.raises(ValueError, match="not in the ring"):
            r.read(4)
        r.release(0, 3)
        assert r.gating(0) == 3 and r.next_for(0) == 4
        with pytest.raises(ValueError, match="must be in gating"):
            r.release(0, 2)
        with pytest.raises(ValueError, match="must be in gating"):
            r.release(0, 9)
        with pytest.raises(IndexError):
            r.gating(1)
        del view
    os.unlink(p)


def test_views_keep_the_mapping_alive(ring_dir: Path) -> None:
    p = str(ring_dir / "v.ring")
    r = N.Ring.create(p, 4, 8, [0], H)
    r.publish(b"keep")
    v = r.read(0)
    r.close()
    assert bytes(v) == b"keep"  # still mapped: unmapped when the last view goes
    del v
    os.unlink(p)


def test_publish_many_and_try_publish_on_full(ring_dir: Path) -> None:
    p = str(ring_dir / "m.ring")
    with N.Ring.create(p, 8, 8, [0], H) as r:
        assert r.publish_many([b"a", b"bb", bytearray(b"ccc")]) == 2
        with pytest.raises(ValueError, match="item 1"):
            r.publish_many([b"ok", b"x" * 9])
        with pytest.raises(TypeError, match="item 0"):
            r.publish_many([1])  # type: ignore[list-item]  # deliberately not bytes-like
        assert r.cursor() == 2  # nothing of a rejected batch was published
        assert r.publish_many([]) == 2
        for i in range(5):
            assert r.try_publish(bytes([i]))
        assert r.cursor() == 7
        assert r.try_publish(b"full") is False
        with pytest.raises(TimeoutError):
            r.publish(b"full", N.WAIT_SPIN, 1_000_000)
        r.release(0, 1)
        assert r.try_publish(b"n8") and r.try_publish(b"n9") and not r.try_publish(b"no")
        assert [r.read_bytes(s) for s in range(2, 10)] == [b"ccc", b"\x00", b"\x01", b"\x02", b"\x03",
                                                          b"\x04", b"n8", b"n9"]
    os.unlink(p)


def test_publish_many_larger_than_capacity_with_consumer(ring_dir: Path) -> None:
    p = str(ring_dir / "big.ring")
    r = N.Ring.create(p, 8, 8, [0], H)
    got: list[bytes] = []

    def consume() -> None:
        c = N.Ring.attach(p)
        nxt = 0
        while True:
            avail = c.wait_for(0, nxt, N.WAIT_BACKOFF, 10_000_000_000)
            if avail < 0:
                break
            got.extend(c.read_bytes(s) for s in range(nxt, avail + 1))
            c.release(0, avail)
            nxt = avail + 1
        c.close()

    t = threading.Thread(target=consume)
    t.start()
    items = [i.to_bytes(4, "little") for i in range(1000)]
    assert r.publish_many(items) == 999
    r.request_stop()
    t.join(30)
    assert not t.is_alive()
    assert got == items
    r.close()
    os.unlink(p)


def test_claim_commit_in_place(ring_dir: Path) -> None:
    p = str(ring_dir / "cc.ring")
    with N.Ring.create(p, 4, 8, [0], H) as r:
        s = r.claim()
        view = r.slot(s)
        assert len(view) == 8 and not view.readonly
        view[:3] = b"abc"
        with pytest.raises(RuntimeError, match="not committed"):
            r.claim()
        assert r.wait_for(0, 0, N.WAIT_SPIN, 0) == -1  # not visible before commit
        with pytest.raises(ValueError, match="outside"):
            r.commit(s, 9)
        r.commit(s, 3)
        assert r.read_bytes(0) == b"abc"
        with pytest.raises(ValueError, match="not a claimed slot"):
            r.slot(5)
        del view
    os.unlink(p)


def test_deps_masks_are_honoured(ring_dir: Path) -> None:
    p = str(ring_dir / "d.ring")
    # consumer 0 free, 1 after 0, 2 after 0 and 1
    with N.Ring.create(p, 8, 8, [0, 1, 3], H) as r:
        r.publish_many([b"1", b"2", b"3"])
        assert r.wait_for(0, 0, N.WAIT_SPIN, 0) == 2
        assert r.wait_for(1, 0, N.WAIT_SPIN, 0) == -1
        assert r.wait_for(2, 0, N.WAIT_SPIN, 0) == -1
        r.release(0, 1)
        assert r.wait_for(1, 0, N.WAIT_SPIN, 0) == 1
        assert r.wait_for(2, 0, N.WAIT_SPIN, 0) == -1
        r.release(1, 0)
        assert r.wait_for(2, 0, N.WAIT_SPIN, 0) == 0
        assert r.wait_for(2, 1, N.WAIT_YIELD, 1000) == -1
        snap = r.snapshot()
        assert snap["gating"] == [1, 0, -1] and snap["lag"] == [1, 2, 3] and snap["fill"] == 3
    os.unlink(p)


def test_backpressure_nothing_overwritten(ring_dir: Path) -> None:
    """A producer faster than a slow consumer blocks; the consumer sees every message intact."""
    p = str(ring_dir / "bp.ring")
    r = N.Ring.create(p, 4, 8, [0], H)
    n = 200
    done = threading.Event()

    def produce() -> None:
        prod = N.Ring.attach(p)
        for i in range(n):
            prod.publish(i.to_bytes(8, "little"), N.WAIT_BLOCK, 30_000_000_000)
        prod.close()
        done.set()

    seen = []
    t = threading.Thread(target=produce)
    t.start()
    nxt = 0
    while nxt < n:
        avail = r.wait_for(0, nxt, N.WAIT_BLOCK, 30_000_000_000)
        assert avail >= nxt
        assert r.cursor() - r.gating(0) <= 4  # the producer never runs a full ring ahead
        for s in range(nxt, avail + 1):
            seen.append(int.from_bytes(r.read(s), "little"))
        r.release(0, avail)
        nxt = avail + 1
    t.join(30)
    assert done.is_set() and seen == list(range(n))
    r.close()
    os.unlink(p)


def test_wait_for_stop_and_timeouts(ring_dir: Path) -> None:
    p = str(ring_dir / "s.ring")
    with N.Ring.create(p, 4, 8, [0], H) as r:
        for w in (N.WAIT_SPIN, N.WAIT_YIELD, N.WAIT_BACKOFF, N.WAIT_BLOCK):
            assert r.wait_for(0, 0, w, 2_000_000) == -1
        with pytest.raises(ValueError, match="wait strategy"):
            r.wait_for(0, 0, 7, 0)
        r.publish(b"x")
        r.request_stop()
        assert r.stop_requested()
        assert r.wait_for(0, 0, N.WAIT_BLOCK, -1) == 0  # published before stop: still delivered
        r.release(0, 0)
        assert r.wait_for(0, 1, N.WAIT_BLOCK, -1) == -1  # stop and nothing more: no wait
        r.clear_stop()
        assert not r.stop_requested()
    os.unlink(p)


def test_stop_wakes_a_blocked_waiter(ring_dir: Path) -> None:
    p = str(ring_dir / "w.ring")
    r = N.Ring.create(p, 4, 8, [0], H)
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(r.wait_for(0, 0, N.WAIT_BLOCK, 60_000_000_000)))
    t.start()
    r.request_stop()
    t.join(30)
    assert out == [-1]
    r.close()
    os.unlink(p)


def test_dropped_length_and_set_length(ring_dir: Path) -> None:
    p = str(ring_dir / "dl.ring")
    with N.Ring.create(p, 4, 8, [0], H) as r:
        r.publish(b"abcdef")
        r.set_length(0, 3)
        assert r.read_bytes(0) == b"abc"
        r.set_length(0, N.DROPPED_LENGTH)
        assert r.length(0) == N.DROPPED_LENGTH and r.read_bytes(0) == b""
        r.set_length(0, -1)
        assert r.length(0) == N.DROPPED_LENGTH
        with pytest.raises(ValueError, match="outside"):
            r.set_length(0, 9)
        sv = r.stage_slot(0)
        assert len(sv) == 8 and not sv.readonly
        del sv
    os.unlink(p)


def test_run_builtin_in_threads_and_count_sink(ring_dir: Path) -> None:
    p = str(ring_dir / "b.ring")
    r = N.Ring.create(p, 64, 16, [0, 1, 3], H)
    results: dict[str, object] = {}
    a = N.Ring.attach(p)
    def stage(name: str, c: int, delta: int, wait: int) -> None:
        results[name] = a.run_builtin(c, N.OP_ADD_U8, delta, wait)

    threads = [
        threading.Thread(target=stage, args=("s0", 0, 3, N.WAIT_BLOCK)),
        threading.Thread(target=stage, args=("s1", 1, 250, N.WAIT_YIELD)),
        threading.Thread(target=lambda: results.__setitem__("sink", a.count_sink(2, N.WAIT_BACKOFF))),
    ]
    for t in threads:
        t.start()
    msgs = [bytes([i % 256]) * (i % 17) for i in range(3000)]
    for m in msgs[:1000]:
        r.publish(m)
    r.publish_many(msgs[1000:])
    r.request_stop()
    for t in threads:
        t.join(60)
    assert results["s0"] == 2999 and results["s1"] == 2999
    assert results["sink"] == (3000, sum(len(m) for m in msgs))
    for s in range(3000 - 64, 3000):
        assert r.read_bytes(s) == bytes((b + 253) % 256 for b in msgs[s])
    with pytest.raises(ValueError, match="unknown builtin op"):
        a.run_builtin(0, 9, 0)
    with pytest.raises(ValueError, match="delta"):
        a.run_builtin(0, N.OP_ADD_U8, 256)
    a.close()
    r.close()
    os.unlink(p)


def test_participants_table(ring_dir: Path) -> None:
    p = str(ring_dir / "pt.ring")
    with N.Ring.create(p, 4, 8, [0], H) as r:
        s0 = r.register_participant(1, os.getpid())
        s1 = r.register_participant(2, os.getpid())
        assert s0 != s1
        before = r.participants()
        assert [(role, pid, state) for (role, pid, _hb, state) in before] == [
            (1, os.getpid(), N.PARTICIPANT_RUNNING), (2, os.getpid(), N.PARTICIPANT_RUNNING)]
        r.heartbeat(s0)
        assert r.participants()[0][2] >= before[0][2]
        r.unregister_participant(s1, True)
        assert r.participants()[1][3] == N.PARTICIPANT_EXITED
        r.unregister_participant(s1)
        assert len(r.participants()) == 1
        with pytest.raises(IndexError):
            r.heartbeat(N.MAX_PARTICIPANTS)
        with pytest.raises(ValueError):
            r.register_participant(1, 0)
        # the table fills up with live pids; a dead pid's entry is reused
        for _ in range(N.MAX_PARTICIPANTS - 1):
            r.register_participant(3, os.getpid())
        with pytest.raises(RuntimeError, match="full"):
            r.register_participant(3, os.getpid())
    os.unlink(p)


def test_a_signal_handler_interrupts_a_wait(ring_dir: Path) -> None:
    """Waits release the GIL but still run Python signal handlers (Ctrl-C works)."""
    import signal

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    p = str(ring_dir / "sig.ring")
    r = N.Ring.create(p, 4, 8, [0], H)
    old = signal.signal(signal.SIGALRM, handler)
    try:
        for wait in (N.WAIT_SPIN, N.WAIT_BACKOFF, N.WAIT_BLOCK):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(Interrupted):
                r.wait_for(0, 0, wait, 30_000_000_000)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(Interrupted):
                r.run_builtin(0, N.OP_IDENTITY, 0, wait)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    r.close()
    os.unlink(p)


def test_close_while_another_thread_waits(ring_dir: Path) -> None:
    p = str(ring_dir / "cw.ring")
    r = N.Ring.create(p, 4, 8, [0], H)
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(r.wait_for(0, 0, N.WAIT_BLOCK, 20_000_000_000)))
    t.start()
    # wait until the thread sleeps on the published cursor (its sleepers flag, layout offset 832 + 8)
    import mmap
    import time

    with open(p, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        deadline = time.monotonic() + 30
        while struct.unpack_from("<I", mm, 840)[0] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    r.close()  # the waiting call keeps the mapping until it returns
    assert r.closed
    other = N.Ring.attach(p)
    other.publish(b"late")
    t.join(30)
    assert out == [0]
    other.close()
    os.unlink(p)


def test_publish_returns_plain_ints_even_when_kept(ring_dir: Path) -> None:
    """publish() reuses its result int only when the caller dropped it; kept results never change."""
    import mmap

    p = str(ring_dir / "ints.ring")
    r = N.Ring.create(p, 1 << 12, 8, [0], H)
    kept = []
    for i in range(3000):
        s = r.publish(b"x")
        assert s == i and type(s) is int and hash(s) == hash(i) and str(s) == str(i)
        if i % 97 == 0:
            kept.append(s)
        if i % 1024 == 1023:
            r.release(0, s)
    assert kept == list(range(0, 3000, 97))
    r.close()
    # sequences past 2**30 (two 30-bit digits) and past 2**60: move every cursor there and attach
    for start in (2**31 + 5, 2**61 + 3):
        with open(p, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
            for off in (768, 832, 896):  # claim, published, gating[0]
                struct.pack_into("<q", mm, off, start)
        a = N.Ring.attach(p)
        got = [a.publish(b"y") for _ in range(3)]
        assert got == [start + 1, start + 2, start + 3]
        assert [hash(g) for g in got] == [hash(start + k) for k in (1, 2, 3)]
        assert a.read_bytes(start + 2) == b"y"
        a.close()
    os.unlink(p)


def _drain_n(r: N.Ring, c: int, n: int) -> list[bytes]:
    out: list[bytes] = []
    nxt = r.next_for(c)
    while len(out) < n:
        avail = r.wait_for(c, nxt, N.WAIT_BACKOFF, 10_000_000_000)
        assert avail >= 0, f"stuck after {len(out)} messages"
        out.extend(r.read_bytes(s) for s in range(nxt, avail + 1))
        r.release(c, avail)
        nxt = avail + 1
    return out


def test_publish_many_survives_the_list_changing_while_it_waits(ring_dir: Path) -> None:
    """Another thread clears and refills the list while publish_many waits on a full ring (GIL
    released): what was in the list when the call started is published, nothing else."""
    p = str(ring_dir / "pm.ring")
    r = N.Ring.create(p, 4, 16, [0], H)
    n = 200
    items = [b"item-%04d" % i for i in range(n)]  # the list holds the only references
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            r.publish_many(items, N.WAIT_BLOCK, 30_000_000_000)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=publish)
    t.start()
    deadline = time.monotonic() + 30
    while r.cursor() < 3:  # the ring is full: the publisher now waits with the GIL released
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(0.02)
    items.clear()  # frees the original item array and, without another reference, the items
    gc.collect()
    items.extend(b"X" * 16 for _ in range(4 * n))  # reuse the freed memory
    got = _drain_n(r, 0, n)
    t.join(30)
    assert not errors and not t.is_alive()
    assert got == [b"item-%04d" % i for i in range(n)]
    r.close()
    os.unlink(p)


def test_publish_many_survives_a_signal_handler_changing_the_list(ring_dir: Path) -> None:
    """The waiter runs signal handlers while publish_many waits: a handler that empties the list
    does not change what the call publishes."""
    p = str(ring_dir / "pms.ring")
    r = N.Ring.create(p, 4, 16, [0], H)
    n = 100
    items = [b"sig-%04d" % i for i in range(n)]
    go = threading.Event()
    got: list[bytes] = []
    consumer = threading.Thread(target=lambda: go.wait(30) and got.extend(_drain_n(r, 0, n)))
    consumer.start()

    def handler(signum: int, frame: object) -> None:
        items.clear()
        items.extend(b"Y" * 16 for _ in range(4 * n))
        go.set()

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        assert r.publish_many(items, N.WAIT_BACKOFF, 30_000_000_000) == n - 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    consumer.join(30)
    assert got == [b"sig-%04d" % i for i in range(n)]
    r.close()
    os.unlink(p)


def test_close_while_publish_waits_raises_instead_of_writing(ring_dir: Path) -> None:
    p = str(ring_dir / "pc.ring")
    r = N.Ring.create(p, 4, 8, [0], H)
    r.publish_many([b"a", b"b", b"c", b"d"])
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            r.publish_many([b"e", b"f"], N.WAIT_BLOCK, 30_000_000_000)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=publish)
    t.start()
    time.sleep(0.05)
    r.close()  # the waiting call keeps the mapping; once room appears it must not write
    other = N.Ring.attach(p)
    other.release(0, 3)
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], ValueError), errors
    assert "closed while waiting" in str(errors[0])
    assert other.cursor() == 3
    other.close()
    os.unlink(p)


def test_the_stub_names_everything_the_module_exports() -> None:
    """_native.pyi is hand-written: every public name of the module and of its classes is in it."""
    import ast

    stub = ast.parse((Path(N.__file__).parent / "_native.pyi").read_text(encoding="utf-8"))
    top: set[str] = set()
    members: dict[str, set[str]] = {}
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            top.add(node.name)
            members[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    public = {n for n in dir(N) if not n.startswith("_")}
    assert public - top == set(), "in the module, not in the stub"
    assert top - public == set(), "in the stub, not in the module"
    for cls, names in members.items():
        have = {n for n in vars(getattr(N, cls)) if not n.startswith("_")}  # its own, not inherited
        assert have - names == set(), f"{cls}: in the class, not in the stub"
