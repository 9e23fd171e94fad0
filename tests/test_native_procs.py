"""byteor._native.Ring across processes: builtin stages in children, SIGKILL + recover (crash
atomicity), the block strategy's idle CPU, multi-producer ordering, no leftover files."""

from __future__ import annotations

import hashlib
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import _native as N

H = hashlib.sha256(b"procs").digest()
OFF_REDO = 1408  # layout v1: redo line of consumer c at 1408 + 64 * c (marker i64, done i64, length u32)

STAGE = """
import sys
from byteor import _native as N
r = N.Ring.attach(sys.argv[1])
slot = r.register_participant(10 + int(sys.argv[2]), __import__("os").getpid())
c, op, delta, wait = (int(a) for a in sys.argv[2:6])
last = r.run_builtin(c, op, delta, wait, heartbeat_slot=slot)
r.unregister_participant(slot, True)
print(last, flush=True)
"""

PRODUCER = """
import sys
from byteor import _native as N
r = N.Ring.attach(sys.argv[1])
pid, n = int(sys.argv[2]), int(sys.argv[3])
i = 0
while i < n:
    if i % 3 == 0 and i + 4 <= n:
        r.publish_many([bytes([pid]) + (i + k).to_bytes(4, "little") for k in range(4)])
        i += 4
    else:
        r.publish(bytes([pid]) + i.to_bytes(4, "little"))
        i += 1
"""


@pytest.fixture
def ring_dir(tmp_path: Path) -> Iterator[Path]:
    d = Path("/dev/shm") / f"byteor-ptest-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    yield d
    leftover = sorted(p.name for p in d.iterdir())
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    assert leftover == [], f"test left files behind: {leftover}"


_CHILDREN: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_children() -> Iterator[None]:
    """A failed test must not leave stage processes running."""
    yield
    while _CHILDREN:
        child = _CHILDREN.pop()
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


def spawn(code: str, *args: object) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _CHILDREN.append(child)
    return child


def wait_until(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]  # a zero-argument callable
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the timeout")
        time.sleep(0.005)


def msg(seq: int, size: int) -> bytes:
    return bytes((seq * 7 + j) % 256 for j in range(size))


def drain_egress(r: N.Ring, c: int, n: int, timeout_s: float = 60) -> list[bytes]:
    out: list[bytes] = []
    nxt = 0
    deadline = time.monotonic() + timeout_s
    while nxt < n:
        assert time.monotonic() < deadline, f"egress stuck at {nxt}/{n}"
        avail = r.wait_for(c, nxt, N.WAIT_BACKOFF, 1_000_000_000)
        if avail < 0:
            continue
        out.extend(r.read_bytes(s) for s in range(nxt, avail + 1))
        r.release(c, avail)
        nxt = avail + 1
    return out


def test_add_u8_chain_in_child_processes(ring_dir: Path) -> None:
    path = ring_dir / "chain.ring"
    r = N.Ring.create(str(path), 128, 64, [0, 1, 3], H)  # stage 0, stage 1 after 0, egress after both
    kids = [spawn(STAGE, path, 0, N.OP_ADD_U8, 5, N.WAIT_BLOCK),
            spawn(STAGE, path, 1, N.OP_ADD_U8, 200, N.WAIT_BACKOFF)]
    n = 5000
    t = threading.Thread(target=lambda: r.publish_many([msg(i, 1 + i % 64) for i in range(n)]))
    t.start()
    got = drain_egress(r, 2, n)
    t.join(30)
    r.request_stop()
    outs = [k.communicate(timeout=30) for k in kids]
    assert [k.returncode for k in kids] == [0, 0], outs
    assert [o[0].strip() for o in outs] == [str(n - 1)] * 2
    assert got == [bytes((b + 205) % 256 for b in msg(i, 1 + i % 64)) for i in range(n)]
    parts = r.participants()
    assert sorted(role for role, _pid, _hb, _st in parts) == [10, 11]
    assert all(st == N.PARTICIPANT_EXITED for *_x, st in parts)
    r.close()
    os.unlink(path)


def test_recover_completes_a_half_done_copy(ring_dir: Path) -> None:
    """The redo record alone (no timing): a copy interrupted after the marker is finished by recover."""
    path = ring_dir / "redo.ring"
    r = N.Ring.create(str(path), 8, 16, [0], H)
    r.publish_many([b"abcdefgh", b"01234567"])
    scratch = r.modify_begin(0, 0)
    assert bytes(scratch[:8]) == b"abcdefgh"
    scratch[:5] = b"ABCDE"
    r.modify_commit(0, 0, 5)
    assert r.read_bytes(0) == b"ABCDE"
    with pytest.raises(ValueError, match="already applied"):
        r.modify_commit(0, 0, 5)
    # now simulate a stage killed in the middle of copying message 1: scratch complete, marker set,
    # slot half written, done not advanced
    scratch = r.modify_begin(0, 1)
    scratch[:8] = b"zzzzzzzz"
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        struct.pack_into("<qqI", mm, OFF_REDO, 1, 0, 8)
    r.stage_slot(1)[:3] = b"zzz"  # the half copy
    assert r.read_bytes(1) == b"zzz34567"
    assert r.recover(0) is True
    assert r.read_bytes(1) == b"zzzzzzzz" and r.gating(0) == 1
    assert r.recover(0) is False  # idempotent: nothing applied twice
    assert r.read_bytes(1) == b"zzzzzzzz"
    del scratch
    r.close()
    os.unlink(path)


def test_recover_without_marker_leaves_the_slot_for_recompute(ring_dir: Path) -> None:
    path = ring_dir / "redo2.ring"
    r = N.Ring.create(str(path), 8, 16, [0], H)
    r.publish(b"keep")
    scratch = r.modify_begin(0, 0)
    scratch[:4] = b"XXXX"  # killed while computing: marker never set
    assert r.recover(0) is False
    assert r.read_bytes(0) == b"keep" and r.gating(0) == -1
    del scratch
    r.close()
    os.unlink(path)


@pytest.mark.parametrize("op", [N.OP_ADD_U8, N.OP_IDENTITY])
def test_sigkill_mid_stream_then_restart_applies_each_change_once(ring_dir: Path, op: int) -> None:
    path = ring_dir / "crash.ring"
    n, size, kills = 30000, 64, 3
    r = N.Ring.create(str(path), 256, size, [0, 1], H)
    expected = [bytes(((b + 1) if op == N.OP_ADD_U8 else b) % 256 for b in msg(i, size)) for i in range(n)]
    pub = threading.Thread(target=lambda: [r.publish(msg(i, size), N.WAIT_BLOCK) for i in range(n)])
    pub.start()
    got: list[bytes] = []
    stop_egress = threading.Event()

    def egress() -> None:
        nxt = 0
        while nxt < n and not stop_egress.is_set():
            avail = r.wait_for(1, nxt, N.WAIT_BACKOFF, 200_000_000)
            if avail < 0:
                continue
            got.extend(r.read_bytes(s) for s in range(nxt, avail + 1))
            r.release(1, avail)
            nxt = avail + 1

    eg = threading.Thread(target=egress)
    eg.start()
    child = spawn(STAGE, path, 0, op, 1, N.WAIT_SPIN)
    killed_at = []
    for k in range(kills):
        target = (k + 1) * n // (kills + 2)
        wait_until(lambda t=target, ch=child: r.gating(0) >= t or ch.poll() is not None)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)  # reaps it and closes its pipes
        killed_at.append(r.gating(0))
        child = spawn(STAGE, path, 0, op, 1, N.WAIT_SPIN)
    pub.join(60)
    r.request_stop()
    _out, err = child.communicate(timeout=60)
    eg.join(60)
    stop_egress.set()
    assert child.returncode == 0, err
    assert len(got) == n and got == expected, f"killed at {killed_at}"
    assert killed_at == sorted(killed_at) and killed_at[-1] < n - 1  # really killed mid-stream
    r.close()
    os.unlink(path)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_block_wait_burns_no_cpu_when_idle(ring_dir: Path) -> None:
    path = ring_dir / "idle.ring"
    r = N.Ring.create(str(path), 16, 8, [0], H)
    child = spawn(STAGE, path, 0, N.OP_IDENTITY, 0, N.WAIT_BLOCK)
    wait_until(lambda: len(r.participants()) == 1)
    r.publish(b"warm")
    wait_until(lambda: r.gating(0) == 0)
    before = _cpu_seconds(child.pid)
    time.sleep(1.0)
    used = _cpu_seconds(child.pid) - before
    r.publish(b"alive")
    wait_until(lambda: r.gating(0) == 1)
    r.request_stop()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0 and out.strip() == "1", err
    assert used < 0.2, f"an idle blocked stage used {used:.3f} CPU s in one second"
    r.close()
    os.unlink(path)


SINK = """
import sys
from byteor import _native as N
r = N.Ring.attach(sys.argv[1])
msgs, nbytes = r.count_sink(int(sys.argv[2]), int(sys.argv[3]))
print(msgs, nbytes, flush=True)
"""


@pytest.mark.parametrize("wait", [N.WAIT_BACKOFF, N.WAIT_BLOCK])
def test_oversubscribed_fanout_delivers_everything(ring_dir: Path, wait: int) -> None:
    # more waiting subscribers than CPUs, and a small ring so the producer waits too: the waiters'
    # contended path (yield that switched -> sleep / futex, no spin phase) must still see every message
    cells = min(8, (os.cpu_count() or 1) + 2)
    path = ring_dir / "fan.ring"
    r = N.Ring.create(str(path), 64, 16, [0] * cells, H)
    kids = [spawn(SINK, path, c, wait) for c in range(cells)]
    n, batch = 40_000, [b"x" * 10] * 40
    for i in range(n // len(batch)):
        r.publish_many(batch, wait, 30_000_000_000)
        if i % 250 == 0:
            r.publish(b"y" * 3, wait, 30_000_000_000)  # a lone message between batches
    extra = len(range(0, n // len(batch), 250))
    r.request_stop()
    for k in kids:
        out, err = k.communicate(timeout=60)
        assert k.returncode == 0, err
        assert out.split() == [str(n + extra), str(10 * n + 3 * extra)]
    assert all(r.gating(c) == n + extra - 1 for c in range(cells))
    r.close()
    os.unlink(path)


def test_multi_producer_keeps_each_producers_order(ring_dir: Path) -> None:
    path = ring_dir / "mp.ring"
    r = N.Ring.create(str(path), 64, 8, [0], H, multi_producer=True)
    assert r.multi_producer
    per = 4000
    kids = [spawn(PRODUCER, path, pid, per) for pid in (1, 2, 3)]
    got = drain_egress(r, 0, 3 * per)
    for k in kids:
        _out, err = k.communicate(timeout=30)
        assert k.returncode == 0, err
    seen: dict[int, list[int]] = {1: [], 2: [], 3: []}
    for m in got:
        seen[m[0]].append(int.from_bytes(m[1:5], "little"))
    assert all(v == list(range(per)) for v in seen.values())
    assert r.cursor() == 3 * per - 1
    r.close()
    os.unlink(path)


def test_multi_producer_try_publish_and_claim_commit(ring_dir: Path) -> None:
    path = ring_dir / "mp2.ring"
    with N.Ring.create(str(path), 4, 8, [0], H, multi_producer=True) as r:
        other = N.Ring.attach(str(path))
        a = r.claim()
        b = other.claim()
        assert (a, b) == (0, 1)
        other.slot(b)[:1] = b"b"
        other.commit(b, 1)
        assert r.cursor() == -1  # 1 is written but 0 is not: nothing visible yet
        r.slot(a)[:1] = b"a"
        r.commit(a, 1)
        assert r.cursor() == 1
        assert r.try_publish(b"c") and other.try_publish(b"d") and not r.try_publish(b"e")
        assert [r.read_bytes(s) for s in range(4)] == [b"a", b"b", b"c", b"d"]
        other.close()
    os.unlink(path)
