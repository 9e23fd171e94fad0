"""Fuzz targets for what byteor reads from outside: ring files (attach, then every read-only call),
journal directories (damaged anywhere), USM1 envelopes and DataGuard plans, and spec.kv text.

Each property says what must hold for *any* input: a clean error of the documented type, or a result
that agrees with what was written, never a crash, a hang or a wrong answer. ``.ci/sanitize.sh`` runs
this file against the ASan/UBSan build with more examples (``BYTEOR_FUZZ_EXAMPLES``), where any
memory error or undefined behaviour also fails the run.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byteor import SpecError
from byteor import _native as N
from byteor.dataguard import codecs, envelope
from byteor.dataguard.engine import DataGuard, GuardConfig
from byteor.dataguard.rules import RuleSet, parse_rules
from byteor.lanes.journal import JournalCorrupt, JournalOverrun, JournalReader, JournalWriter
from byteor.spec import decode_kv, encode_kv

EXAMPLES = int(os.environ.get("BYTEOR_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
H = hashlib.sha256(b"fuzz").digest()
HEADER_BYTES = N.HEADER_MIN_BYTES  # ring header up to the scratch slots

# -- ring attach --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring_template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("ring") / "t.ring"
    r = N.Ring.create(str(path), 8, 16, [0, 1, 3], H, multi_producer=False)
    for i in range(5):
        r.publish(b"m%d" % i)
    r.close()
    return path.read_bytes()


_I64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 20),
                 st.sampled_from([2**62, 2**62 + 1, 2**63 - 1, -(2**63)]))
_CURSOR_OFFSETS = [768, 832, *(896 + 64 * i for i in range(3)), *(1408 + 64 * i for i in range(3)),
                   *(1416 + 64 * i for i in range(3))]


@FUZZ
@given(st.lists(st.tuples(st.integers(0, HEADER_BYTES - 1), st.integers(0, 255)), max_size=6),
       st.lists(st.tuples(st.sampled_from(_CURSOR_OFFSETS), _I64), max_size=4),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**32 - 1)), max_size=2))
def test_fuzz_ring_attach(ring_template: bytes, tmp_path_factory: pytest.TempPathFactory,
                          flips: list[tuple[int, int]], cursors: list[tuple[int, int]],
                          redo_lengths: list[tuple[int, int]]) -> None:
    data = bytearray(ring_template)
    for off, byte in flips:
        data[off] = byte
    for off, value in cursors:
        struct.pack_into("<q", data, off, value)
    for c, length in redo_lengths:
        struct.pack_into("<I", data, 1408 + 64 * c + 16, length)
    path = tmp_path_factory.mktemp("attach") / "r.ring"
    path.write_bytes(bytes(data))
    try:
        r = N.Ring.attach(str(path))
    except N.AttachError:
        return
    try:
        snap = r.snapshot()
        assert all(lag >= 0 for lag in snap["lag"]) and snap["fill"] >= 0
        for c in range(r.n_consumers):
            r.gating(c)
            r.next_for(c)
            r.recover(c)  # a crafted redo record must be clamped, never copied past a slot
        cur = r.cursor()
        for seq in range(max(0, cur - r.capacity + 1), cur + 1):
            assert len(r.read_bytes(seq)) <= r.slot_bytes
            assert r.length(seq) <= r.slot_bytes or r.length(seq) == N.DROPPED_LENGTH
    finally:
        r.close()


# -- hole repair on a crafted multi-producer ring -----------------------------------------------------------

_MP_CAPACITY = 8
_MP_DATA = N.HEADER_MIN_BYTES + 64  # one consumer's 64-byte scratch slot
_MP_STRIDE = 32  # 16-byte slot header + 16-byte payload


@pytest.fixture(scope="module")
def mp_ring_template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("mpring") / "t.ring"
    r = N.Ring.create(str(path), _MP_CAPACITY, 16, [0], H, multi_producer=True)
    for i in range(5):
        r.publish(b"m%d" % i)
    r.close()
    return path.read_bytes()


_PIDS = st.one_of(st.sampled_from([0, 1, os.getpid(), 2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
_SEQS = st.one_of(st.integers(-3, 3 * _MP_CAPACITY), st.sampled_from([2**62, -(2**63), 2**63 - 1]))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 4), _PIDS, st.integers(0, 3)), max_size=4),
       st.lists(st.tuples(st.integers(0, 15), st.integers(0, 2**64 - 1), _SEQS, _SEQS), max_size=4),
       st.tuples(st.lists(st.tuples(st.integers(0, _MP_CAPACITY - 1), _SEQS), max_size=6),
                 st.integers(0, 3 * _MP_CAPACITY)))
def test_fuzz_hole_repair(mp_ring_template: bytes, tmp_path_factory: pytest.TempPathFactory,
                          parts: list[tuple[int, int, int, int]], recs: list[tuple[int, int, int, int]],
                          cursors: tuple[list[tuple[int, int]], int]) -> None:
    """Crafted participants, claim records, slot published words and claim cursor: repair and a
    stopping consumer stay inside one lap of the mapping and never hang."""
    pubseqs, claim = cursors
    data = bytearray(mp_ring_template)
    for i, state, pid, flags in parts:
        struct.pack_into("<I", data, 192 + 32 * i, state)
        struct.pack_into("<II", data, 192 + 32 * i + 8, pid, flags)
    for i, ticks, lo, hi in recs:
        struct.pack_into("<Qqq", data, N.HEADER_MIN_BYTES - 16 * 64 + 64 * i, ticks, lo, hi)
    for slot, seq in pubseqs:
        struct.pack_into("<q", data, _MP_DATA + _MP_STRIDE * slot + 8, seq)
    struct.pack_into("<q", data, 768, claim)
    path = tmp_path_factory.mktemp("holes") / "r.ring"
    path.write_bytes(bytes(data))
    try:
        r = N.Ring.attach(str(path))
    except N.AttachError:
        return
    try:
        before = r.cursor()
        assert 0 <= r.repair() <= _MP_CAPACITY + 1
        assert before <= r.cursor()
        r.request_stop()
        msgs, dropped, _last = r.drain(0, 100, N.WAIT_SPIN, 50_000_000)
        assert all(len(m) <= r.slot_bytes for m in msgs) and dropped >= 0
        assert r.snapshot()["repaired"] >= 0
    finally:
        r.close()


# -- journal reading ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def journal_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    d = tmp_path_factory.mktemp("journal") / "j"
    msgs = [bytes([i % 251]) * (i % 90) for i in range(120)]
    with JournalWriter(d, segment_bytes=4096, slot_bytes=128, spec_hash="sha256:" + "c" * 64) as w:
        for m in msgs:
            w.append(m)
    return d, msgs


@FUZZ
@given(st.data())
def test_fuzz_journal_reading(journal_template: tuple[Path, list[bytes]], tmp_path_factory: pytest.TempPathFactory,
                              data: st.DataObject) -> None:
    src, msgs = journal_template
    d = tmp_path_factory.mktemp("damaged")
    segments = sorted(p.name for p in src.iterdir() if p.name.startswith("seg-"))
    for name in segments:
        raw = bytearray((src / name).read_bytes())
        for _ in range(data.draw(st.integers(0, 3))):
            at = data.draw(st.integers(0, min(len(raw), 1200) - 1))
            raw[at] = data.draw(st.integers(0, 255))
        (d / name).write_bytes(bytes(raw))
    if data.draw(st.booleans()) and len(segments) > 2:
        (d / segments[1]).unlink()
    reader = JournalReader(d)
    got: list[bytes] = []
    try:
        for rec in reader.records():
            got.append(bytes(rec))
    except (JournalCorrupt, JournalOverrun):
        pass
    # whatever is returned is exactly what was written, in order, from the first kept position
    if got:
        start = msgs.index(got[0]) if got[0] in msgs else -1
        assert start >= 0 and got == msgs[start:start + len(got)]
    try:
        count = reader.verify()
    except JournalCorrupt:
        return
    assert count <= len(msgs)


# -- USM1 envelopes and DataGuard plans ---------------------------------------------------------------

REGISTRY = Path(__file__).parent / "vectors" / "dataguard" / "registry"


def _pair(rules: list[str]) -> tuple[DataGuard, DataGuard]:
    def make() -> DataGuard:
        return DataGuard(GuardConfig(str(REGISTRY), 7, 1, 2, mode="mapkv", flow="fused", on_reject="forward_input",
                                     rules=RuleSet(parse_rules(rules), environ={})))

    fast, ref = make(), make()
    ref._native = ref._fast = None
    return fast, ref


@FUZZ
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=8),
       st.sampled_from([["email:mask=1:1:#"], ["name:truncate=3", "blob:hash"], ["email:mask=1048576:0:*"], []]))
def test_fuzz_usm1_envelopes(payloads: list[bytes], rules: list[str]) -> None:
    fast, ref = _pair(rules)
    out_a, out_b = bytearray(70000), bytearray(70000)
    for body in payloads:
        for msg in (body, envelope.encode(body, codec_id=1, schema_id=7, msg_type=1, msg_version=2)):
            a, b = fast.process_into(msg, out_a), ref.process_into(msg, out_b)
            assert a == b, msg.hex()
            if a > 0:
                assert out_a[:a] == out_b[:b]
    assert fast.counts == ref.counts
    with pytest.raises(ValueError):  # decode refuses, never crashes
        codecs.decode_mapkv(b"\xff" * 12)


# -- spec.kv --------------------------------------------------------------------------------------------

_KEYS = ["pipeline.name", "pipeline.target", "pipeline.ring.capacity", "pipeline.stages.0.id",
         "pipeline.stages.1.delta", "pipeline.stages.1.depends_on.0", "pipeline.lanes.0.segment_bytes",
         "pipeline.stages.99999999999.id", "pipeline.constraints.shards"]
_VALUES = st.one_of(st.sampled_from(["SingleRing", "LaneGraph", "x", "0", "-1", "1024", ""]),
                    st.integers(0, 6000).map(lambda n: "9" * n), st.text(max_size=12))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), max_size=10))
def test_fuzz_spec_kv(lines: list[tuple[str, str]]) -> None:
    text = "".join(f"{k}={v}\n" for k, v in lines)
    try:
        spec = decode_kv(text.encode("utf-8", errors="surrogateescape"))
    except SpecError:
        return
    assert decode_kv(encode_kv(spec)) == spec
