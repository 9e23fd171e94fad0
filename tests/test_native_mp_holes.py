"""Holes of multi-producer rings: a producer killed between its claim and its publish.

Its claimed slots are published as dropped (``DROPPED_LENGTH``) and counted once nobody alive claims
them, so consumers go on; nothing another producer wrote is lost or repeated. Claims of a live
producer are never touched, and a pid reused by a newer process does not keep a dead claim alive.
"""

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

import pytest

from byteor import _native as N
from byteor.runtime.lanegraph._stats import RoleStats

H = hashlib.sha256(b"mp-holes").digest()
PARTICIPANTS = 192  # participants table: 16 entries of 32 bytes, pid (u32) at +8

#: Publishes argv[3] messages "<tag><i:4>" one by one, then exits.
STEADY = """
import sys
from byteor import _native as N
r = N.Ring.attach(sys.argv[1])
tag, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    r.publish(bytes([tag]) + i.to_bytes(4, "little"), N.WAIT_BACKOFF)
r.close()
"""

#: Publishes argv[3] messages, claims one more slot, writes half of it and says which; then waits
#: (for a SIGKILL, or for a line on stdin telling it to commit).
CLAIMER = """
import sys
from byteor import _native as N
r = N.Ring.attach(sys.argv[1])
tag, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    r.publish(bytes([tag]) + i.to_bytes(4, "little"))
seq = r.claim()
r.slot(seq)[:1] = bytes([tag])
print(seq, flush=True)
sys.stdin.readline()
r.slot(seq)[:5] = bytes([tag]) + n.to_bytes(4, "little")
r.commit(seq, 5)
r.close()
"""


@pytest.fixture
def ring_dir(tmp_path: Path) -> Iterator[Path]:
    d = Path("/dev/shm") / f"byteor-holes-{os.getpid()}-{tmp_path.name}"
    d.mkdir(mode=0o700)
    yield d
    leftover = sorted(p.name for p in d.iterdir())
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    assert leftover == [], f"test left files behind: {leftover}"


@pytest.fixture
def ring(ring_dir: Path) -> Iterator[N.Ring]:
    r = N.Ring.create(str(ring_dir / "mp.ring"), 64, 16, [0], H, multi_producer=True)
    yield r
    r.close()
    os.unlink(ring_dir / "mp.ring")


_CHILDREN: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_children() -> Iterator[None]:
    """A failed test must not leave producers running."""
    yield
    while _CHILDREN:
        child = _CHILDREN.pop()
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


def spawn(code: str, *args: object) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _CHILDREN.append(child)
    return child


def claimed_by(child: subprocess.Popen[str]) -> int:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, child.communicate(timeout=30)[1]
    return int(line)


def drain_until(r: N.Ring, want: int, timeout_s: float = 60) -> tuple[list[bytes], int]:
    """Consume cell 0 until ``want`` messages arrived; returns them and the dropped slots seen."""
    got: list[bytes] = []
    dropped = 0
    deadline = time.monotonic() + timeout_s
    while len(got) < want:
        assert time.monotonic() < deadline, f"consumer stuck after {len(got)}/{want} (cursor {r.cursor()})"
        msgs, d, _last = r.drain(0, 4096, N.WAIT_BACKOFF, 200_000_000)
        got.extend(msgs)
        dropped += d
    return got, dropped


def by_tag(msgs: list[bytes]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for m in msgs:
        out.setdefault(m[0], []).append(int.from_bytes(m[1:5], "little"))
    return out


def test_a_producer_killed_between_claim_and_publish_leaves_no_hole(ring: N.Ring) -> None:
    victim = spawn(CLAIMER, ring.path, 9, 3)
    hole = claimed_by(victim)
    assert hole == 3 and ring.cursor() == 2
    victim.send_signal(signal.SIGKILL)  # not reaped yet: a zombie is as dead as a reaped process
    deadline = time.monotonic() + 30
    while Path(f"/proc/{victim.pid}/stat").read_text().split(")")[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    per = 2000  # the two live producers wrap the 64-slot ring many times behind the hole
    steady = [spawn(STEADY, ring.path, tag, per) for tag in (1, 2)]
    got, dropped = drain_until(ring, 3 + 2 * per)
    for child in steady:
        _out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    assert victim.wait(30) == -signal.SIGKILL
    assert by_tag(got) == {9: [0, 1, 2], 1: list(range(per)), 2: list(range(per))}  # each once, in order
    assert dropped == 1 and ring.snapshot()["repaired"] == 1 and ring.repaired == 1
    assert ring.cursor() == 3 + 2 * per  # the hole's slot is published (as dropped)
    assert ring.repair() == 0


@pytest.mark.parametrize("wait", [N.WAIT_BLOCK, N.WAIT_SPIN], ids=["block", "spin"])
def test_a_native_consumer_loop_passes_over_a_hole(ring: N.Ring, wait: int) -> None:
    """count_sink (the loop run_builtin and run_stage share) repairs the hole while it waits."""
    victim = spawn(CLAIMER, ring.path, 9, 3)
    claimed_by(victim)
    victim.kill()
    victim.communicate(timeout=30)
    result: list[tuple[int, int]] = []
    sink = threading.Thread(target=lambda: result.append(ring.count_sink(0, wait)))
    sink.start()
    try:
        per = 500
        for child in [spawn(STEADY, ring.path, tag, per) for tag in (1, 2)]:
            _out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
        deadline = time.monotonic() + 60
        while ring.gating(0) < 3 + 2 * per:  # consumed past the hole before anyone asked it to stop
            assert time.monotonic() < deadline, f"sink stuck at {ring.gating(0)}"
            time.sleep(0.01)
    finally:
        ring.request_stop()
        sink.join(60)
    assert result == [(3 + 2 * per, 5 * (3 + 2 * per))] and ring.snapshot()["repaired"] == 1


def test_the_claim_of_a_live_producer_is_never_repaired(ring: N.Ring) -> None:
    slow = spawn(CLAIMER, ring.path, 5, 2)
    seq = claimed_by(slow)
    ring.publish(b"\x07after")  # written behind the open claim: not visible yet
    assert ring.repair() == 0
    msgs, dropped, last = ring.drain(0, 100, N.WAIT_BACKOFF, 150_000_000)  # waits past the repair delay
    assert [m[:1] for m in msgs] == [b"\x05", b"\x05"] and dropped == 0 and last == seq - 1
    assert slow.stdin is not None
    slow.stdin.write("commit\n")
    slow.stdin.flush()
    _out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    got, dropped = drain_until(ring, 2)
    assert got == [b"\x05" + (2).to_bytes(4, "little"), b"\x07after"] and dropped == 0
    assert ring.snapshot()["repaired"] == 0


def test_a_reused_pid_does_not_keep_a_dead_claim_alive(ring: N.Ring) -> None:
    victim = spawn(CLAIMER, ring.path, 3, 1)
    claimed_by(victim)
    victim.kill()
    victim.communicate(timeout=30)
    # the kernel gives the dead producer's pid to a newer process: here, this test's own pid
    slots = [s for s, _role, pid, _hb, _st in ring.participant_slots() if pid == victim.pid]
    assert len(slots) == 1
    with open(ring.path, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        struct.pack_into("<I", mm, PARTICIPANTS + 32 * slots[0] + 8, os.getpid())
    assert ring.repair() == 1
    assert ring.cursor() == 1 and ring.length(1) == N.DROPPED_LENGTH
    ring.publish(b"\x04next")
    got, dropped = drain_until(ring, 2)
    assert got == [b"\x03" + bytes(4), b"\x04next"] and dropped == 1


def test_consumers_stopping_deliver_what_follows_a_hole(ring: N.Ring) -> None:
    victim = spawn(CLAIMER, ring.path, 6, 0)
    assert claimed_by(victim) == 0
    victim.kill()
    victim.communicate(timeout=30)
    ring.publish_many([b"a", b"b"])
    ring.request_stop()
    msgs, dropped, last = ring.drain(0, 100, N.WAIT_BLOCK, 60_000_000_000)  # stop: repaired at once
    assert (msgs, dropped, last) == ([b"a", b"b"], 1, 2)


def test_only_the_claiming_object_commits_a_claim_once(ring: N.Ring) -> None:
    """A claim record covers the object's own open claims: committing someone else's claim, or one
    claim twice, would leave a live claim uncovered (and repairable)."""
    other = N.Ring.attach(ring.path)
    a, b = ring.claim(), other.claim()
    with pytest.raises(ValueError, match="not an open claim of this Ring object"):
        ring.commit(b, 0)
    other.commit(b, 0)
    with pytest.raises(ValueError, match="not an open claim of this Ring object"):
        other.commit(b, 0)
    assert ring.repair() == 0 and ring.cursor() == -1  # a is still open, by a live object
    ring.commit(a, 0)
    assert ring.cursor() == 1
    other.close()


def test_a_ring_closed_with_an_uncommitted_claim_is_repaired(ring: N.Ring) -> None:
    other = N.Ring.attach(ring.path)
    seq = other.claim()
    assert ring.repair() == 0  # `other` is alive and holds the claim
    other.close()  # gives its participant entry back: the claim can never be committed now
    assert ring.repair() == 1 and ring.length(seq) == N.DROPPED_LENGTH


def test_an_older_ring_layout_is_refused_in_one_line(ring: N.Ring, tmp_path: Path) -> None:
    old = Path(ring.path).with_name("v1.ring")
    data = bytearray(Path(ring.path).read_bytes())
    struct.pack_into("<I", data, 8, 1)
    fd = os.open(old, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        with pytest.raises(N.AttachError) as exc:
            N.Ring.attach(str(old))
        assert str(exc.value) == f"{old}: layout version 1, this build reads version {N.LAYOUT_VERSION}"
    finally:
        old.unlink()


#: A LaneGraph bridge role (native loop) from an events ring into the mpsc ring, as _role_main runs it.
ROLE = """
import json, mmap, os, sys
from byteor import _native as N
cfg = json.loads(sys.argv[1])
st = mmap.mmap(os.open(cfg["stats"], os.O_RDWR), N.ROLE_STATS_BYTES)
ins = [(N.Ring.attach(cfg["in"]), 0)]
outs = [(N.Ring.attach(cfg["out"]), "block", "out")]
print(N.run_role("bridge", ins, outs, st, wait=N.WAIT_BACKOFF, participant_role=256), flush=True)
"""

#: Where each kill of the role lands (fault injection, see core.c): right after it claims an mpsc
#: slot (the hole: dropped and counted), right after its batch record (the restart publishes the
#: slot: a repair that dropped it would lose the message), after publishing, or anywhere.
ROLE_KILLS = ["claim:300", "record:200", "random", "publish:200", "claim:7", "random"]


def test_a_lanegraph_role_killed_after_its_claim_drops_that_slot_only(ring_dir: Path) -> None:
    n = 20_000
    src = N.Ring.create(str(ring_dir / "in.ring"), 256, 16, [0], H)
    out = N.Ring.create(str(ring_dir / "out.ring"), 64, 16, [0], H, multi_producer=True)
    other = N.Ring.attach(out.path)  # a second writer of the lane, in this process
    stats = RoleStats(str(ring_dir / "role.stats"), create=True)
    mine = [b"r:%06d" % i for i in range(n)]
    theirs = [b"o:%06d" % i for i in range(n)]
    errors: list[BaseException] = []
    got: list[bytes] = []
    dropped = [0]
    done = threading.Event()

    def produce_in() -> None:
        try:
            for i in range(0, n, 100):
                src.publish_many(mine[i:i + 100], N.WAIT_BLOCK, 60_000_000_000)
        except BaseException as exc:
            errors.append(exc)

    def produce_out() -> None:
        try:
            for m in theirs:
                other.publish(m, N.WAIT_BACKOFF, 60_000_000_000)
        except BaseException as exc:
            errors.append(exc)

    def consume() -> None:
        while not done.is_set() or out.cursor() > out.gating(0):
            msgs, d, _last = out.drain(0, 4096, N.WAIT_BACKOFF, 50_000_000)
            got.extend(msgs)
            dropped[0] += d

    threads = [threading.Thread(target=f) for f in (produce_in, produce_out, consume)]
    for t in threads:
        t.start()
    cfg = json.dumps({"stats": stats.path, "in": src.path, "out": out.path})

    def spawn_role(fault: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "BYTEOR_FAULT_ROLE_KILL"}
        if fault != "random":
            env["BYTEOR_FAULT_ROLE_KILL"] = fault
        child = subprocess.Popen([sys.executable, "-c", ROLE, cfg], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        _CHILDREN.append(child)
        return child

    child = spawn_role(ROLE_KILLS[0])
    try:
        for k, fault in enumerate(ROLE_KILLS):
            if fault == "random":
                target = min(n - 1, src.gating(0) + 1500)
                deadline = time.monotonic() + 60
                while src.gating(0) < target and child.poll() is None:
                    assert time.monotonic() < deadline, f"role stuck at {src.gating(0)}"
                    time.sleep(0.001)
                child.send_signal(signal.SIGKILL)
            _out, err = child.communicate(timeout=60)  # a fault kills the role by itself
            assert child.returncode == -signal.SIGKILL, (fault, child.returncode, err)
            time.sleep(0.15)  # the consumer waits past its repair delay: it must leave the role's claim alone
            child = spawn_role(ROLE_KILLS[k + 1] if k + 1 < len(ROLE_KILLS) else "random")
        threads[0].join(120)
        src.request_stop()
        _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        threads[1].join(120)
    finally:
        done.set()
        for t in threads:
            t.join(60)
        other.close()
        stats.close()
    try:
        assert not errors, errors
        seen = Counter(got)
        assert seen == Counter(mine + theirs), (
            f"{sum((Counter(mine + theirs) - seen).values())} lost, "
            f"{sum((seen - Counter(mine + theirs)).values())} duplicated")
        assert [m for m in got if m[:1] == b"r"] == mine and [m for m in got if m[:1] == b"o"] == theirs
        repaired = out.repaired
        assert dropped[0] == repaired and repaired >= 2  # the two claim kills at least
    finally:
        for r in (src, out):
            r.close()
            os.unlink(r.path)
        os.unlink(ring_dir / "role.stats")
