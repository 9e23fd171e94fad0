"""The native stage loop (``Ring.run_stage``): a Python stage function called by the C core in each
of the four stage forms. Results must equal a plain Python loop over the same function; bad returns
and exceptions name the problem and leave the failing message unconsumed; a stage process killed
mid-stream and restarted changes every message exactly once."""

from __future__ import annotations

import array
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from byteor import _native as N

H = hashlib.sha256(b"native-stage").digest()
DROP = -1
SLOT = 48


@pytest.fixture
def ring_dir(tmp_path: Path) -> Iterator[Path]:
    d = Path("/dev/shm") / f"byteor-stest-{os.getpid()}-{tmp_path.name}"
    d.mkdir()
    yield d
    leftover = sorted(p.name for p in d.iterdir())
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    assert leftover == [], f"test left files behind: {leftover}"


def messages(n: int) -> list[bytes]:
    """Lengths 0, 1 (CPython's shared one-byte objects), up to the whole slot, varied content."""
    return [bytes((i * 31 + j) % 256 for j in range(i % (SLOT + 1))) for i in range(n)]


def reference(form: int, fn: Callable[..., Any], msgs: list[bytes]) -> list[bytes | None]:
    """What a plain Python loop makes of ``msgs`` (None: dropped)."""
    out: list[bytes | None] = []
    for m in msgs:
        if form == N.FORM_MAP:
            r = fn(bytes(m))
            out.append(None if r is None else bytes(r))
        elif form == N.FORM_FILTER:
            out.append(None if fn(bytes(m)) is None else m)
        elif form == N.FORM_INPLACE:
            buf = bytearray(SLOT)
            buf[: len(m)] = m
            n = fn(memoryview(buf), len(m))
            out.append(None if n == DROP else bytes(buf[:n]))
        else:
            view = memoryview(bytes(m) + bytes(SLOT - len(m)))
            out.append(None if fn(view, len(m)) == DROP else m)
    return out


def run_native(ring_dir: Path, form: int, fn: Callable[..., Any], msgs: list[bytes], *, capacity: int = 8,
               side_effect: bool = False) -> list[bytes | None]:
    """Publish ``msgs`` from a thread into a small ring while ``run_stage`` consumes them here; an
    egress cell after the stage collects the result (None: dropped)."""
    path = str(ring_dir / "s.ring")
    r = N.Ring.create(path, capacity, SLOT, [0, 1], H)

    def produce() -> None:
        for i in range(0, len(msgs), 5):
            r.publish_many(msgs[i:i + 5], N.WAIT_BACKOFF, 30_000_000_000)
        r.request_stop()

    got: list[bytes | None] = []

    def egress() -> None:
        nxt = 0
        while nxt < len(msgs):
            avail = r.wait_for(1, nxt, N.WAIT_BACKOFF, 10_000_000_000)
            assert avail >= 0
            for s in range(nxt, avail + 1):
                got.append(None if r.length(s) == N.DROPPED_LENGTH else r.read_bytes(s))
            r.release(1, avail)
            nxt = avail + 1

    threads = [threading.Thread(target=produce), threading.Thread(target=egress)]
    for t in threads:
        t.start()
    try:
        last = r.run_stage(0, fn, form, N.WAIT_BACKOFF, side_effect=side_effect)
    finally:
        for t in threads:
            t.join(30)
    assert last == len(msgs) - 1
    r.close()
    os.unlink(path)
    return got


# ---- map -----------------------------------------------------------------------------------------

def map_upper(m: bytes) -> bytes:
    return m.upper()


def map_varied(m: bytes) -> bytes | bytearray | memoryview | None:
    k = len(m) % 6
    if k == 0:
        return None
    if k == 1:
        return m  # the same object: unchanged
    if k == 2:
        return bytearray(reversed(m))
    if k == 3:
        return memoryview(m + b"+")[: SLOT]
    if k == 4:
        return m[: len(m) // 2]
    return (b"z" * SLOT)[: min(SLOT, len(m) + 3)]


def filter_odd(m: bytes) -> object:
    return None if len(m) % 2 else m[:1]


def inplace_varied(slot: memoryview, n: int) -> int:
    k = n % 5
    if k == 0:
        return DROP
    if k == 1:
        slot[:n] = bytes(reversed(slot[:n]))
        return n
    if k == 2:  # grow: write past the message (the view is the whole slot)
        end = min(SLOT, n + 4)
        slot[n:end] = b"+" * (end - n)
        return end
    if k == 3:
        return n // 2
    return n


def readonly_even(slot: memoryview, n: int) -> int:
    assert slot.readonly and len(slot) == SLOT
    return DROP if n and slot[0] % 2 == 0 else n


CASES = [
    ("map_upper", N.FORM_MAP, map_upper),
    ("map_varied", N.FORM_MAP, map_varied),
    ("filter_odd", N.FORM_FILTER, filter_odd),
    ("inplace_varied", N.FORM_INPLACE, inplace_varied),
    ("readonly_even", N.FORM_READONLY, readonly_even),
]


@pytest.mark.parametrize(("name", "form", "fn"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("side_effect", [False, True])
def test_each_form_matches_a_plain_python_loop(ring_dir: Path, name: str, form: int, fn: Callable[..., Any],
                                               side_effect: bool) -> None:
    msgs = messages(700)
    assert run_native(ring_dir, form, fn, msgs, side_effect=side_effect) == reference(form, fn, msgs)


def test_map_messages_kept_by_the_function_are_never_rewritten(ring_dir: Path) -> None:
    kept: list[bytes] = []
    hashes_ok: list[bool] = []

    def keep_some(m: bytes) -> bytes:
        hashes_ok.append(hash(m) == hash(bytes(bytearray(m))))  # a reused object's hash is recomputed
        if len(m) % 3 == 0:
            kept.append(m)
        return m

    msgs = messages(400)
    assert run_native(ring_dir, N.FORM_MAP, keep_some, msgs) == msgs
    assert kept == [m for m in msgs if len(m) % 3 == 0]
    assert all(hashes_ok) and len(hashes_ok) == len(msgs)


def test_dropped_input_messages_are_skipped(ring_dir: Path) -> None:
    path = str(ring_dir / "d.ring")
    r = N.Ring.create(path, 16, SLOT, [0], H)
    r.publish_many([b"a", b"b", b"c"])
    r.set_length(1, N.DROPPED_LENGTH)
    r.request_stop()
    seen: list[bytes] = []
    assert r.run_stage(0, seen.append, N.FORM_FILTER) == 2  # a builtin method is a stage too
    assert seen == [b"a", b"c"]
    r.close()
    os.unlink(path)


def test_side_effect_stages_release_after_every_message(ring_dir: Path) -> None:
    path = str(ring_dir / "se.ring")
    r = N.Ring.create(path, 64, SLOT, [0], H)
    r.publish_many([bytes([i]) for i in range(40)])
    r.request_stop()
    gating: list[int] = []

    def effect(slot: memoryview, n: int) -> int:
        gating.append(r.gating(0))
        return n

    r.run_stage(0, effect, N.FORM_READONLY, side_effect=True)
    assert gating == list(range(-1, 39))  # message s runs with everything before it released
    r.close()
    os.unlink(path)


def test_a_slow_function_releases_what_it_finished_within_a_batch(ring_dir: Path) -> None:
    path = str(ring_dir / "slow.ring")
    r = N.Ring.create(path, 64, SLOT, [0], H)
    r.publish_many([bytes([i]) for i in range(8)])  # one batch of 8
    r.request_stop()
    seen: list[tuple[int, int]] = []

    def slow(slot: memoryview, n: int) -> int:
        seen.append((slot[0], r.gating(0)))
        time.sleep(0.01)
        return n

    r.run_stage(0, slow, N.FORM_INPLACE)
    assert seen == [(k, k - 1) for k in range(8)]  # message k runs with 0..k-1 already released
    r.close()
    os.unlink(path)


def test_heartbeat_is_written(ring_dir: Path) -> None:
    path = str(ring_dir / "hb.ring")
    r = N.Ring.create(path, 64, SLOT, [0], H)
    slot = r.register_participant(16, os.getpid())
    before = r.participants()[0][2]
    r.publish_many([b"x"] * 10)
    r.request_stop()
    time.sleep(0.01)
    r.run_stage(0, map_upper, N.FORM_MAP, heartbeat_slot=slot)
    assert r.participants()[0][2] > before
    r.close()
    os.unlink(path)


# ---- failures ------------------------------------------------------------------------------------

BAD_RETURNS = [
    (N.FORM_MAP, lambda m: 7, TypeError, "returned int; a map stage returns bytes, bytearray, memoryview or None"),
    (N.FORM_MAP, lambda m: b"x" * (SLOT + 1), ValueError, f"returned {SLOT + 1} bytes, more than slot_bytes={SLOT}"),
    (N.FORM_MAP, lambda m: memoryview(b"abcdefgh")[::2], TypeError, "non-contiguous memoryview"),
    (N.FORM_MAP, lambda m: array.array("B", m), TypeError, "returned array; a map stage returns bytes"),
    (N.FORM_INPLACE, lambda s, n: "3", TypeError, f"returned '3'; expected a length in 0..{SLOT} or DROP"),
    (N.FORM_INPLACE, lambda s, n: True, TypeError, "returned True; expected a length"),
    (N.FORM_INPLACE, lambda s, n: SLOT + 1, ValueError, f"returned {SLOT + 1}; expected a length in 0..{SLOT}"),
    (N.FORM_INPLACE, lambda s, n: -2, ValueError, "returned -2; expected a length"),
    (N.FORM_INPLACE, lambda s, n: 1 << 70, ValueError, "expected a length in 0.."),
    (N.FORM_READONLY, lambda s, n: n + 1, ValueError, "a read-only stage returns its length (3) or DROP"),
    (N.FORM_READONLY, lambda s, n: None, ValueError, "returned None; a read-only stage"),
]


@pytest.mark.parametrize(("form", "fn", "exc", "text"), BAD_RETURNS)
def test_bad_returns_name_the_problem_and_keep_the_message(ring_dir: Path, form: int, fn: Callable[..., Any],
                                                           exc: type[Exception], text: str) -> None:
    path = str(ring_dir / "bad.ring")
    r = N.Ring.create(path, 16, SLOT, [0], H)
    good = (lambda m: m) if form in (N.FORM_MAP, N.FORM_FILTER) else (lambda s, n: n)
    calls = [0]

    def bad_on_third(*a: Any) -> Any:
        calls[0] += 1
        return fn(*a) if calls[0] == 3 else good(*a)

    r.publish_many([b"abc"] * 5)
    r.request_stop()
    with pytest.raises(exc) as info:
        r.run_stage(0, bad_on_third, form)
    assert text in str(info.value)
    assert info.value.failed_seq == 2  # type: ignore[attr-defined]
    assert r.gating(0) == 1  # the failed message is still unconsumed
    assert r.run_stage(0, good, form) == 4  # and is processed by the next run
    r.close()
    os.unlink(path)


@pytest.mark.parametrize("form", [N.FORM_MAP, N.FORM_FILTER, N.FORM_INPLACE, N.FORM_READONLY])
def test_an_exception_propagates_with_its_message_and_sequence(ring_dir: Path, form: int) -> None:
    path = str(ring_dir / "exc.ring")
    r = N.Ring.create(path, 16, SLOT, [0, 1], H)
    r.publish_many([bytes([i]) * 4 for i in range(10)])
    r.request_stop()

    def boom(first: Any, *rest: Any) -> Any:
        if bytes(first[:1]) == b"\x06":
            raise KeyError("bad record 6")
        return rest[0] if rest else first

    with pytest.raises(KeyError, match="bad record 6") as info:
        r.run_stage(0, boom, form)
    assert info.value.failed_seq == 6  # type: ignore[attr-defined]
    assert r.gating(0) == 5 and r.read_bytes(6) == b"\x06" * 4  # not lost, not changed
    r.close()
    os.unlink(path)


def test_bad_arguments(ring_dir: Path) -> None:
    path = str(ring_dir / "args.ring")
    r = N.Ring.create(path, 16, SLOT, [0], H)
    with pytest.raises(ValueError, match="unknown stage form 9"):
        r.run_stage(0, map_upper, 9)
    with pytest.raises(TypeError, match="fn must be callable"):
        r.run_stage(0, 42, N.FORM_MAP)
    with pytest.raises(IndexError, match="consumer index 3"):
        r.run_stage(3, map_upper, N.FORM_MAP)
    r.close()
    with pytest.raises(ValueError, match="ring is closed"):
        r.run_stage(0, map_upper, N.FORM_MAP)
    os.unlink(path)


def test_a_signal_handler_that_raises_ends_the_loop(ring_dir: Path) -> None:
    path = str(ring_dir / "sig.ring")
    r = N.Ring.create(path, 16, SLOT, [0], H)

    def handler(signum: int, frame: object) -> None:
        raise TimeoutError("alarm")

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(TimeoutError, match="alarm"):
            r.run_stage(0, map_upper, N.FORM_MAP, N.WAIT_BLOCK)  # waits: nothing is published
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    r.close()
    os.unlink(path)


@pytest.mark.parametrize("form", [N.FORM_INPLACE, N.FORM_READONLY])
def test_views_kept_past_the_call_keep_the_mapping_alive(ring_dir: Path, form: int) -> None:
    path = str(ring_dir / "keep.ring")
    r = N.Ring.create(path, 16, SLOT, [0], H)
    kept: list[memoryview] = []

    def keeper(slot: memoryview, n: int) -> int:
        kept.append(slot)
        kept.append(slot[:n])
        return n

    r.publish_many([b"hello"] * 12)
    r.request_stop()
    assert r.run_stage(0, keeper, form) == 11
    r.close()
    assert r.closed
    assert [len(bytes(v)) for v in kept] == [SLOT, 5] * 12  # still readable: the views hold the mapping
    kept.clear()  # the last views go: now the file is unmapped
    os.unlink(path)


@pytest.mark.parametrize("form", [N.FORM_INPLACE, N.FORM_READONLY])
def test_a_function_that_releases_its_view_gets_a_new_one(ring_dir: Path, form: int) -> None:
    def releaser(slot: memoryview, n: int) -> int:
        assert bytes(slot[:n]).startswith(b"m")
        slot.release()
        return n

    msgs = [b"m%d" % i for i in range(30)]
    assert run_native(ring_dir, form, releaser, msgs) == msgs


# ---- crash and restart ---------------------------------------------------------------------------

STAGE_PROC = """
import sys
from byteor import _native as N
T = bytes((i + 1) % 256 for i in range(256))

def busy():
    for _ in range(30):  # slower than the producer: the ring stays full, a kill lands mid-batch
        pass

def bump(m):
    busy()
    if int.from_bytes(m[:4], "little") % 5 == 0:
        return None
    return m[:4] + m[4:].translate(T)

def bump_inplace(slot, n):
    busy()
    if int.from_bytes(slot[:4], "little") % 5 == 0:
        return -1
    slot[4:n] = bytes(slot[4:n]).translate(T)
    return n

r = N.Ring.attach(sys.argv[1])
form = int(sys.argv[2])
hb = r.register_participant(16, __import__("os").getpid())
last = r.run_stage(0, bump if form == N.FORM_MAP else bump_inplace, form, N.WAIT_SPIN, heartbeat_slot=hb)
r.unregister_participant(hb, True)
print(last, flush=True)
"""


def _msg(i: int) -> bytes:
    return i.to_bytes(4, "little") + bytes((i * 7 + j) % 256 for j in range(4 + i % 40))


@pytest.mark.slow
@pytest.mark.parametrize("form", [N.FORM_MAP, N.FORM_INPLACE])
def test_sigkill_mid_stream_then_restart_loses_and_repeats_nothing(ring_dir: Path, form: int) -> None:
    path = str(ring_dir / "crash.ring")
    n, kills = 100_000, 6
    r = N.Ring.create(path, 256, 64, [0, 1], H)
    producer_error: list[BaseException] = []
    msgs = [_msg(i) for i in range(n)]

    def produce() -> None:
        try:
            for i in range(0, n, 200):
                r.publish_many(msgs[i:i + 200], N.WAIT_BLOCK, 60_000_000_000)
        except BaseException as exc:
            producer_error.append(exc)

    got: list[bytes] = []
    dropped = [0]

    def egress() -> None:  # drain(): egress is never the bottleneck, the stage is
        last = -1
        deadline = time.monotonic() + 120
        while last < n - 1 and time.monotonic() < deadline:
            msgs, drops, seq = r.drain(1, 4096, N.WAIT_BACKOFF, 200_000_000)
            got.extend(msgs)
            dropped[0] += drops
            last = max(last, seq)

    threads = [threading.Thread(target=produce), threading.Thread(target=egress)]
    for t in threads:
        t.start()

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", STAGE_PROC, path, str(form)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    child = spawn()
    killed_at: list[int] = []
    try:
        for k in range(kills):
            target = (k + 1) * n // (kills + 2)
            deadline = time.monotonic() + 60
            while r.gating(0) < target and child.poll() is None:
                assert time.monotonic() < deadline, f"stage stuck at {r.gating(0)}"
                time.sleep(0.002)
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
            killed_at.append(r.gating(0))
            child = spawn()
        threads[0].join(120)
        r.request_stop()
        out, err = child.communicate(timeout=120)
        threads[1].join(120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=30)
    assert not producer_error
    assert child.returncode == 0, err
    assert out.strip() == str(n - 1)
    assert killed_at == sorted(killed_at) and killed_at[-1] < n - 1, killed_at  # really killed mid-stream
    t = bytes((i + 1) % 256 for i in range(256))
    expected = [m[:4] + m[4:].translate(t) for i, m in enumerate(msgs) if i % 5]
    assert dropped[0] == n // 5 and len(got) == len(expected), (dropped, len(got), killed_at)
    bad = [i for i in range(len(got)) if got[i] != expected[i]]
    assert not bad, f"{len(bad)} messages lost, repeated or changed twice (first {bad[:5]}), killed at {killed_at}"
    r.close()
    os.unlink(path)
