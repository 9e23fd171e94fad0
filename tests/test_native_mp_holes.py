"""Holes of multi-producer rings: a producer killed between its claim and its publish.

Its claimed slots are published as dropped (``DROPPED_LENGTH``) and counted once nobody alive claims
them, so consumers go on; nothing another producer wrote is lost or repeated. Claims of a live
producer are never touched, and a pid reused by a newer process does not keep a dead claim alive.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from byteor import _native as N

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
def ring(tmp_path: Path) -> Iterator[N.Ring]:
    d = Path("/dev/shm") / f"byteor-holes-{os.getpid()}-{tmp_path.name}"
    d.mkdir(mode=0o700)
    r = N.Ring.create(str(d / "mp.ring"), 64, 16, [0], H, multi_producer=True)
    yield r
    r.close()
    os.unlink(d / "mp.ring")
    d.rmdir()


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
    assert dropped == 1 and ring.snapshot()["repaired"] == 1
    assert ring.cursor() == 3 + 2 * per  # the hole's slot is published (as dropped)
    assert ring.repair() == 0


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
