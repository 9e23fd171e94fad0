"""The C kernel (byteor._native.DgPlan) against the Python reference engine: same outputs, same
counters, byte for byte, over generated and mutated messages."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byteor import _native
from byteor.dataguard import codecs, engine, envelope
from byteor.dataguard.engine import DataGuard, GuardConfig
from byteor.dataguard.rules import MAX_RULE_NUMBER, RuleSet, parse_rules

REGISTRY = Path(__file__).parent / "vectors" / "dataguard" / "registry"

RULE_SETS = [
    ["email:mask=1:4:*", "name:hash", "phone:truncate=4"],
    ["email:mask=0:0:é", "blob:mask=1:1:#", "name:truncate=0", "phone:drop"],
    ["email:replace_with=x", "user_id:replace_with=-7", "active:replace_with=true", "blob:hash"],
    ["email:replace_with=jane@example.com", "name:mask=30:30:*", "blob:truncate=100", "phone:hash"],
    [],
]


def pair(flow: str, rules: list[str], *, mode: str = "mapkv", on_reject: str = "drop", key: str = "",
         capacity: int = engine.MAX_ENVELOPE) -> tuple[DataGuard, DataGuard]:
    ids = (7, 1, 2) if mode == "mapkv" else (9, 4, 1)
    env = {"K": key} if key else {}

    def make() -> DataGuard:
        return DataGuard(GuardConfig(str(REGISTRY), *ids, mode=mode, flow=flow, on_reject=on_reject,
                                     rules=RuleSet(parse_rules(rules), hash_key_env="K", environ=env),
                                     capacity=capacity))

    fast = make()
    assert fast.native
    ref = make()
    ref._native = ref._fast = None
    return fast, ref


def same(fast: DataGuard, ref: DataGuard, msgs: list[bytes]) -> None:
    out_a, out_b = bytearray(70000), bytearray(70000)
    for m in msgs:
        a, b = fast.process_into(m, out_a), ref.process_into(m, out_b)
        assert a == b, m.hex()
        if a > 0:
            assert out_a[:a] == out_b[:b], m.hex()
    assert fast.counts == ref.counts
    assert fast.rule_applied == ref.rule_applied and fast.rule_noop == ref.rule_noop


_text = st.text(max_size=40)
_account = st.fixed_dictionaries(
    {"user_id": st.integers(-(2**63), 2**63 - 1), "email": _text, "name": _text, "active": st.booleans()},
    optional={"phone": _text, "blob": st.binary(max_size=40), "extra": _text})


def _mutations(msg: bytes, rng: random.Random) -> list[bytes]:
    out = [msg, msg[:-1], msg + b"\x00"]
    for _ in range(6):
        b = bytearray(msg)
        i = rng.randrange(len(b))
        b[i] = rng.randrange(256)
        out.append(bytes(b))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(_account, min_size=1, max_size=6),
       st.tuples(st.sampled_from(range(len(RULE_SETS))), st.sampled_from(["check", "redact", "fused"]),
                 st.sampled_from(["drop", "forward_input"]), st.sampled_from(["", "k3y"])),
       st.integers(0, 2**32))
def test_mapkv_kernel_matches_python(objs: list[dict[str, Any]], cfg: tuple[int, str, str, str],
                                     seed: int) -> None:
    rules_at, flow, on_reject, key = cfg
    rng = random.Random(seed)
    fast, ref = pair(flow, RULE_SETS[rules_at], on_reject=on_reject, key=key)
    msgs: list[bytes] = []
    for generated in objs:
        version = rng.choice([2, 2, 2, 3, 1])
        obj = generated
        if rng.random() < 0.2:
            obj = dict(obj, user_id="not an int")
        if rng.random() < 0.2:
            obj = {k: v for k, v in obj.items() if k != "email"}
        msg = envelope.encode(codecs.encode_mapkv(obj), codec_id=1, schema_id=7, msg_type=1,
                              msg_version=version)
        msgs += _mutations(msg, rng)
    same(fast, ref, msgs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), _text, st.booleans(), st.binary(max_size=20)),
                min_size=1, max_size=5), st.sampled_from(["check", "redact", "fused"]), st.integers(0, 2**32))
def test_row_kernel_matches_python(rows: list[tuple[int, str, bool, bytes]], flow: str, seed: int) -> None:
    rng = random.Random(seed)
    fast, ref = pair(flow, ["name:mask=1:1:*", "raw:drop", "id:replace_with=0"], mode="row")
    fields = [("id", "int"), ("name", "string"), ("ok", "bool"), ("raw", "bytes")]
    msgs: list[bytes] = []
    for i, n, ok, raw in rows:
        payload = codecs.encode_row(fields, {"id": i, "name": n, "ok": ok, "raw": raw})
        msgs += _mutations(envelope.encode(payload, codec_id=2, schema_id=9, msg_type=4, msg_version=1), rng)
    same(fast, ref, msgs)


def test_overflow_and_long_keys_match() -> None:
    fast, ref = pair("fused", ["name:replace_with=" + "x" * 300], capacity=256)
    obj = {"user_id": 1, "email": "a@b", "name": "n", "active": True}
    msg = envelope.encode(codecs.encode_mapkv(obj), codec_id=1, schema_id=7, msg_type=1, msg_version=2)
    same(fast, ref, [msg, msg])
    assert fast.counts["redact_overflow"] == 2
    fast, ref = pair("fused", ["name:hash"], key="k" * 100)  # a key longer than a block is hashed first
    same(fast, ref, [msg])


def test_the_kernel_serves_the_selected_version_and_python_the_rest() -> None:
    fast, _ = pair("fused", RULE_SETS[0])
    obj = {"user_id": 1, "email": "a@b.example", "name": "n", "active": True}
    v2 = envelope.encode(codecs.encode_mapkv(obj), codec_id=1, schema_id=7, msg_type=1, msg_version=2)
    v3 = envelope.encode(codecs.encode_mapkv(obj), codec_id=1, schema_id=7, msg_type=1, msg_version=3)
    fast.process(v2)
    fast.process(v3)
    assert fast._native.counts()[0] == 1 and fast._counts["seen"] == 1
    assert fast.counts["seen"] == 2 and fast.counts["accepted"] == 2


_FIELDS = ("email", "name", "phone", "blob", "user_id", "active")
_NUMBER = st.one_of(st.integers(0, 8), st.integers(0, MAX_RULE_NUMBER),
                    st.sampled_from([MAX_RULE_NUMBER, MAX_RULE_NUMBER - 1, 65535, 65536]))


@st.composite
def _rule(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(_FIELDS))
    action = draw(st.sampled_from(["drop", "hash", "mask", "truncate", "replace_with"]))
    if action == "mask":
        char = draw(st.sampled_from(["*", "#", "é", "€"]))
        return f"{field}:mask={draw(_NUMBER)}:{draw(_NUMBER)}:{char}"
    if action == "truncate":
        return f"{field}:truncate={draw(_NUMBER)}"
    if action == "replace_with":
        return f"{field}:replace_with={draw(st.sampled_from(['x', '-7', 'true', '', str(2**63 - 1)]))}"
    return f"{field}:{action}"


@settings(max_examples=int(os.environ.get("BYTEOR_FUZZ_EXAMPLES", "150")), deadline=None)
@given(st.lists(_rule(), max_size=4, unique_by=lambda r: r.split(":", 1)[0]),
       st.lists(_account, min_size=1, max_size=3), st.sampled_from(["redact", "fused"]), st.integers(0, 2**32))
def test_rules_fuzz_kernel_matches_python(rules: list[str], objs: list[dict[str, Any]], flow: str, seed: int) -> None:
    """Differential fuzz of the rules themselves (numbers up to the bound, multi-byte mask characters)
    as well as of the envelopes: the C kernel and the Python engine agree byte for byte."""
    rng = random.Random(seed)
    try:
        fast, ref = pair(flow, rules)
    except ValueError:  # a rule that does not fit the schema (e.g. mask on an int): refused for both
        return
    msgs: list[bytes] = []
    for obj in objs:
        msg = envelope.encode(codecs.encode_mapkv(obj), codec_id=1, schema_id=7, msg_type=1, msg_version=2)
        msgs += _mutations(msg, rng)
    same(fast, ref, msgs)


def test_the_kernel_refuses_rule_numbers_beyond_the_bound() -> None:
    """The C plan checks its own inputs: a rule built by hand past the bound never reaches the kernel."""
    fields = ((b"name", 0, True, 0),)
    for prefix, suffix, n, mask in ((2**62, 2**62, 0, b"#"), (0, 0, MAX_RULE_NUMBER + 1, b"#"),
                                    (1, 1, 0, b""), (1, 1, 0, b"12345")):
        rule = (3, b"", None, -1, prefix, suffix, mask, n)
        with pytest.raises(ValueError, match="bad rule"):
            _native.DgPlan(1, 7, 1, 2, False, False, True, False, 65559, fields, (rule,), None)
