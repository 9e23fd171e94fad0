"""SingleRing executors: every behaviour runs in-process (--sp) and multi-process (one fixture)."""

from __future__ import annotations

import hashlib
import os
import signal
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from byteor import PipelineFailed, SpecError, decode_kv
from byteor.runtime import Pipeline
from byteor.runtime.sharding import Router
from byteor.shm import take_snapshot
from byteor.spec.model import SingleRingSpecV1


def spec_of(text: str) -> SingleRingSpecV1:
    spec = decode_kv(textwrap.dedent(text).lstrip())
    assert isinstance(spec, SingleRingSpecV1)
    return spec


@pytest.fixture(params=["sp", "mp"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ring_dir(ring_dir: Path) -> str:
    """The shared fresh /dev/shm directory (conftest), as the str the executors take."""
    return str(ring_dir)


@pytest.fixture
def stage_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real importable module of Python stages, visible to this process and to stage processes."""
    name = f"rt_stages_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import time

        def slow_inc(slot, length):
            time.sleep(0.0003)
            if length:
                slot[0] = (slot[0] + 1) & 0xFF
            return length

        def slow_read(slot, length):
            time.sleep(0.0003)
            return length
        slow_read.byteor_modifies = False

        def drop_odd(slot, length):
            return -1 if length and slot[0] % 2 else length

        def truncate2(slot, length):
            return min(length, 2)

        TABLE = bytes((b + 5) & 0xFF for b in range(256))

        def add5(slot, length):
            slot[:length] = slot[:length].tobytes().translate(TABLE)
            return length
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return name


def open_pipe(spec: SingleRingSpecV1, mode: str, ring_dir: str, **kw: object) -> Pipeline:
    return Pipeline.open(spec, sp=(mode == "sp"), ring_path=ring_dir, wait="block", **kw)  # type: ignore[arg-type]


CHAIN = """
    pipeline.name=chain
    pipeline.target=SingleRing
    pipeline.ring.capacity=64
    pipeline.ring.slot_bytes=16
    pipeline.stages.0.id=a
    pipeline.stages.1.id=b
    pipeline.stages.1.op=add_u8
    pipeline.stages.1.delta=3
    pipeline.stages.1.depends_on.0=0
    pipeline.stages.2.id=c
    pipeline.stages.2.depends_on.0=1
"""


def msg(i: int) -> bytes:
    return i.to_bytes(4, "little") + bytes([i % 251]) * (i % 9)


def plus(data: bytes, d: int) -> bytes:
    return bytes((b + d) & 0xFF for b in data)


def test_strict_order_preserved(mode: str, ring_dir: str) -> None:
    spec = spec_of(CHAIN)
    n = 3000
    with open_pipe(spec, mode, ring_dir) as p:
        for i in range(0, n, 100):
            p.publish_many([msg(j) for j in range(i, i + 50)])
            for j in range(i + 50, i + 100):
                p.publish(msg(j))
    outs = list(p.outputs())
    assert outs == [plus(msg(i), 3) for i in range(n)]
    assert p.stats()["messages_out"] == n


PER_KEY = """
    pipeline.name=sharded
    pipeline.target=SingleRing
    pipeline.constraints.shards=4
    pipeline.constraints.ordering=per_key
    pipeline.constraints.shard_key=bytes:0:2
    pipeline.ring.capacity=32
    pipeline.ring.slot_bytes=8
    pipeline.stages.0.id=inc
    pipeline.stages.0.op=add_u8
    pipeline.stages.0.delta=1
"""


def test_per_key_order_with_4_shards(mode: str, ring_dir: str) -> None:
    spec = spec_of(PER_KEY)
    got: dict[int, list[bytes]] = {}
    lock = threading.Lock()

    def on_output(shard: int, data: bytes) -> None:
        with lock:
            got.setdefault(shard, []).append(data)

    keys = [bytes([k, 255 - k]) for k in range(10)]
    sent = [keys[i % 10] + i.to_bytes(4, "little") for i in range(4000)]
    with open_pipe(spec, mode, ring_dir, on_output=on_output) as p:
        p.publish_many(sent[:2000])
        for m in sent[2000:]:
            p.publish(m)
    router = Router(spec)
    assert len({router.route(k) for k in keys}) > 1  # the keys really spread over shards
    for shard, outs in got.items():
        for out in outs:
            assert router.route(plus(out, -1)) == shard  # SP and MP route every message alike
    for key in keys:
        key_out = [o for outs in got.values() for o in outs if o[:2] == plus(key, 1)]
        assert key_out == [plus(m, 1) for m in sent if m[:2] == key]


DIAMOND = """
    pipeline.name=diamond
    pipeline.target=SingleRing
    pipeline.ring.capacity=4096
    pipeline.ring.slot_bytes=16
    pipeline.stages.0.id=src
    pipeline.stages.1.id=left
    pipeline.stages.1.op=add_u8
    pipeline.stages.1.delta=5
    pipeline.stages.1.depends_on.0=0
    pipeline.stages.2.id=right
    pipeline.stages.2.op=add_u8
    pipeline.stages.2.delta=7
    pipeline.stages.2.depends_on.0=0
    pipeline.stages.3.id=join
    pipeline.stages.3.depends_on.0=1
    pipeline.stages.3.depends_on.1=2
"""


@pytest.mark.slow
def test_diamond_same_bytes_mp_as_sp_over_1m(ring_dir: str) -> None:
    spec = spec_of(DIAMOND)
    n = 1_000_000
    batch = [bytes([i & 0xFF, (i >> 8) & 0xFF, 200, 1]) for i in range(1000)]
    digests: dict[str, str] = {}
    for mode in ("sp", "mp"):
        h = hashlib.sha256()
        count = [0]

        def on_output(_shard: int, data: bytes, h: hashlib._Hash = h, count: list[int] = count) -> None:
            h.update(data)
            count[0] += 1

        with open_pipe(spec, mode, ring_dir, on_output=on_output) as p:
            for _ in range(n // len(batch)):
                p.publish_many(batch)
        assert count[0] == n
        digests[mode] = h.hexdigest()
    expected = hashlib.sha256(b"".join(plus(m, 12) for m in batch) * (n // len(batch))).hexdigest()
    assert digests["mp"] == digests["sp"] == expected


BACKPRESSURE = """
    pipeline.name=bp
    pipeline.target=SingleRing
    pipeline.ring.capacity=4
    pipeline.ring.slot_bytes=8
    pipeline.stages.0.id=fast
    pipeline.stages.0.op=add_u8
    pipeline.stages.0.delta=1
    pipeline.stages.1.id=slow
    pipeline.stages.1.op=resolver
    pipeline.stages.1.resolver_key=py:{mod}:slow_inc
    pipeline.stages.1.depends_on.0=0
"""


def test_backpressure_slow_last_stage_overwrites_nothing(mode: str, ring_dir: str, stage_module: str) -> None:
    spec = spec_of(BACKPRESSURE.format(mod=stage_module))
    sent = [bytes([i & 0x7F, i >> 7, 9]) for i in range(600)]
    fills: list[int] = []
    with open_pipe(spec, mode, ring_dir) as p:
        producer = threading.Thread(target=lambda: [p.publish(m) for m in sent])
        producer.start()
        while producer.is_alive() and mode == "mp":
            fills.append(take_snapshot(f"{ring_dir}/shard-0.ring").fill)
        producer.join()
    if mode == "mp":
        assert max(fills) == spec.capacity  # the producer really ran into the slow stage
        assert all(f <= spec.capacity for f in fills)
    outs = list(p.outputs())
    assert outs == [bytes([((m[0] + 1) + 1) & 0xFF, (m[1] + 1) & 0xFF, 10]) for m in sent]


DROP_TRUNC = """
    pipeline.name=dropper
    pipeline.target=SingleRing
    pipeline.ring.capacity=16
    pipeline.ring.slot_bytes=8
    pipeline.stages.0.id=drop
    pipeline.stages.0.op=resolver
    pipeline.stages.0.resolver_key=py:{mod}:drop_odd
    pipeline.stages.1.id=cut
    pipeline.stages.1.op=resolver
    pipeline.stages.1.resolver_key=py:{mod}:truncate2
    pipeline.stages.1.depends_on.0=0
    pipeline.stages.2.id=inc
    pipeline.stages.2.op=add_u8
    pipeline.stages.2.delta=1
    pipeline.stages.2.depends_on.0=1
"""


def test_drop_and_length_change(mode: str, ring_dir: str, stage_module: str) -> None:
    spec = spec_of(DROP_TRUNC.format(mod=stage_module))
    sent = [bytes([i, 1, 2, 3]) for i in range(100)]
    with open_pipe(spec, mode, ring_dir) as p:
        p.publish_many(sent)
    assert list(p.outputs()) == [bytes([i + 1, 2]) for i in range(0, 100, 2)]
    assert p.stats()["dropped"] == 50


KILL_CHAIN = """
    pipeline.name=kill
    pipeline.target=SingleRing
    pipeline.ring.capacity=64
    pipeline.ring.slot_bytes=8
    pipeline.stages.0.id=s0
    pipeline.stages.0.op={op0}
    pipeline.stages.1.id=s1
    pipeline.stages.1.op={op1}
    pipeline.stages.1.depends_on.0=0
    pipeline.stages.2.id=s2
    pipeline.stages.2.op={op0}
    pipeline.stages.2.depends_on.0=1
"""


@pytest.mark.parametrize(("op0", "op1", "delta"), [("identity", "identity", 0), ("add_u8", "add_u8", 3)])
@pytest.mark.parametrize("victim", [1])
def test_sigkill_stage_mid_stream_loses_nothing(ring_dir: str, op0: str, op1: str, delta: int,
                                                victim: int) -> None:
    spec = spec_of(KILL_CHAIN.format(op0=op0, op1=op1))
    n = 200_000
    outs: list[bytes] = []
    seen = threading.Event()

    def on_output(_shard: int, data: bytes) -> None:
        outs.append(data)
        if len(outs) >= n // 5:
            seen.set()

    sent = [i.to_bytes(4, "little") for i in range(n)]
    p = Pipeline.open(spec, ring_path=ring_dir, wait="block", on_output=on_output)
    try:
        producer = threading.Thread(target=lambda: [p.publish_many(sent[i:i + 256]) for i in range(0, n, 256)])
        producer.start()
        assert seen.wait(120), "pipeline made no progress"
        pids = p.stage_pids()
        assert len(pids) == 3
        os.kill(pids[victim], signal.SIGKILL)
        producer.join(120)
        assert not producer.is_alive()
        p.close()
    except BaseException:
        p.abort()
        raise
    assert p.stats()["restarts"] == {f"stage {victim} 's{victim}'": 1}
    assert len(outs) == n
    assert outs == [plus(m, delta) for m in sent]


def test_sigkill_python_modifying_stage_three_times(ring_dir: str, stage_module: str) -> None:
    """A Python stage writing through modify_begin/modify_commit, killed three times mid-stream:
    every message is changed exactly once (the redo record makes each change crash-atomic)."""
    spec = spec_of(f"""
        pipeline.name=pykill
        pipeline.target=SingleRing
        pipeline.ring.capacity=64
        pipeline.ring.slot_bytes=8
        pipeline.stages.0.id=s0
        pipeline.stages.1.id=s1
        pipeline.stages.1.op=resolver
        pipeline.stages.1.resolver_key=py:{stage_module}:add5
        pipeline.stages.1.depends_on.0=0
        pipeline.stages.2.id=s2
        pipeline.stages.2.op=add_u8
        pipeline.stages.2.delta=1
        pipeline.stages.2.depends_on.0=1
    """)
    n = 60_000
    outs: list[bytes] = []
    sent = [i.to_bytes(4, "little") for i in range(n)]
    p = Pipeline.open(spec, ring_path=ring_dir, wait="block", on_output=lambda _s, d: outs.append(d))
    try:
        producer = threading.Thread(target=lambda: [p.publish_many(sent[i:i + 128]) for i in range(0, n, 128)])
        producer.start()
        deadline = time.monotonic() + 120
        for k in (1, 2, 3):
            while len(outs) < k * n // 5 and time.monotonic() < deadline:
                time.sleep(0.001)
            pids = p.stage_pids()
            assert len(pids) == 3
            os.kill(pids[1], signal.SIGKILL)
            while pids[1] in p.stage_pids() and time.monotonic() < deadline:
                time.sleep(0.001)
        producer.join(120)
        assert not producer.is_alive()
        p.close()
    except BaseException:
        p.abort()
        raise
    assert p.stats()["restarts"] == {"stage 1 's1'": 3}
    assert outs == [plus(m, 6) for m in sent]


def test_stage_that_keeps_dying_stops_pipeline(ring_dir: str, stage_module: str) -> None:
    spec = spec_of(BACKPRESSURE.format(mod=stage_module))
    p = Pipeline.open(spec, ring_path=ring_dir, wait="block", max_restarts=2)
    try:
        deadline = time.monotonic() + 60
        killed = 0
        while killed < 3 and time.monotonic() < deadline:
            pids = p.stage_pids()
            if len(pids) == 2:
                os.kill(pids[1], signal.SIGKILL)
                killed += 1
                while pids[1] in p.stage_pids() and time.monotonic() < deadline:
                    time.sleep(0.02)
            time.sleep(0.05)
        with pytest.raises(PipelineFailed, match=r"stage 1 'slow' keeps dying"):
            while time.monotonic() < deadline:
                p.publish(b"x")
                time.sleep(0.01)
            p.close()
    finally:
        p.abort()


def test_unresolvable_py_stage_fails_before_anything_runs(ring_dir: str) -> None:
    spec = spec_of("""
        pipeline.name=bad
        pipeline.target=SingleRing
        pipeline.stages.0.id=x
        pipeline.stages.0.op=resolver
        pipeline.stages.0.resolver_key=py:no_such_module_zz:fn
    """)
    with pytest.raises(SpecError, match=r"pipeline\.stages\.0\.resolver_key"):
        Pipeline.open(spec, ring_path=ring_dir)
    assert not Path(ring_dir).exists()


def test_python_stage_exception_stops_pipeline(mode: str, ring_dir: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    mod = f"rt_boom_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("def boom(slot, n):\n    raise RuntimeError('kaboom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    spec = spec_of(f"""
        pipeline.name=boom
        pipeline.target=SingleRing
        pipeline.stages.0.id=b
        pipeline.stages.0.op=resolver
        pipeline.stages.0.resolver_key=py:{mod}:boom
    """)
    p = open_pipe(spec, mode, ring_dir)
    try:
        with pytest.raises(PipelineFailed, match=r"stage 0 'b' failed.*kaboom"):
            p.publish(b"abc")
            p.close()
    finally:
        p.abort()
