"""USM1 envelope and mapkv/row codecs against the hand-written vectors in tests/vectors/dataguard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import byteor
from byteor.dataguard import codecs, envelope
from byteor.dataguard.errors import (
    BadHeaderLen,
    BadMagic,
    BadPayloadLen,
    BufferTooSmall,
    CodecError,
    EnvelopeError,
    UnknownFlags,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "dataguard" / "vectors.json").read_text())


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _obj(raw: dict[str, Any]) -> dict[str, codecs.Value]:
    return {k: codecs.value_from_json(v, k) for k, v in raw.items()}


@pytest.mark.parametrize("vec", VECTORS["mapkv"], ids=lambda v: v["name"])
def test_mapkv_vectors_byte_exact(vec: dict[str, Any]) -> None:
    expected = _hex(vec["hex"])
    assert codecs.encode_mapkv(_obj(vec["obj"])) == expected
    assert codecs.decode_mapkv(expected) == _obj(vec["obj"])


@pytest.mark.parametrize("vec", VECTORS["row"], ids=lambda v: v["name"])
def test_row_vectors_byte_exact(vec: dict[str, Any]) -> None:
    fields = [tuple(f) for f in vec["fields"]]
    expected = _hex(vec["hex"])
    assert codecs.encode_row(fields, _obj(vec["obj"])) == expected
    assert codecs.decode_row(fields, expected) == _obj(vec["obj"])
    assert codecs.decode_values(expected) == list(_obj(vec["obj"]).values())


@pytest.mark.parametrize("vec", VECTORS["mapkv_errors"], ids=lambda v: v["name"])
def test_mapkv_malformed_payloads_raise_codec_error(vec: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        codecs.decode_mapkv(_hex(vec["hex"]))


def test_row_errors() -> None:
    fields = [("id", "int"), ("name", "string")]
    with pytest.raises(CodecError, match="'name'"):
        codecs.decode_row(fields, _hex("0102 0100"))  # name carries an int tag
    with pytest.raises(CodecError, match="trailing"):
        codecs.decode_row(fields, _hex("0102 0000 00"))
    with pytest.raises(CodecError, match="missing"):
        codecs.encode_row(fields, {"id": 1})
    with pytest.raises(CodecError, match="not a field"):
        codecs.encode_row(fields, {"id": 1, "name": "", "x": 2})
    with pytest.raises(CodecError, match="is string"):
        codecs.encode_row(fields, {"id": 1, "name": b"x"})


def test_codec_value_limits() -> None:
    with pytest.raises(CodecError, match="i64"):
        codecs.encode_mapkv({"x": 2**63})
    with pytest.raises(CodecError, match="i64"):
        codecs.value_from_json(-(2**63) - 1, "x")
    with pytest.raises(CodecError, match="hex"):
        codecs.value_from_json({"hex": "zz"}, "x")
    with pytest.raises(CodecError, match="unsupported"):
        codecs.value_from_json(1.5, "x")


_values = st.one_of(
    st.text(), st.binary(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1))


@given(st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_mapkv_round_trips_any_object(obj: dict[str, codecs.Value]) -> None:
    data = codecs.encode_mapkv(obj)
    back = codecs.decode_mapkv(data)
    assert back == obj
    assert [type(v) for v in back.values()] == [type(obj[k]) for k in back]
    assert list(back) == sorted(obj, key=lambda k: k.encode("utf-8"))


# ----------------------------------------------------------------------------- envelope


@pytest.mark.parametrize("vec", VECTORS["envelope"], ids=lambda v: v["name"])
def test_envelope_vectors_round_trip(vec: dict[str, Any]) -> None:
    expected = _hex(vec["hex"])
    h = vec["header"]
    payload = _hex(vec["payload"])
    built = envelope.encode(payload, codec_id=h["codec_id"], schema_id=h["schema_id"], msg_type=h["msg_type"],
                            msg_version=h["msg_version"])
    assert built == expected
    header, body = envelope.decode(expected)
    assert header._asdict() == h
    assert bytes(body) == payload


@pytest.mark.parametrize("vec", VECTORS["envelope_decode_only"], ids=lambda v: v["name"])
def test_envelope_decode_accepts_longer_headers_and_slack(vec: dict[str, Any]) -> None:
    header, body = envelope.decode(_hex(vec["hex"]))
    assert header._asdict() == vec["header"]
    assert bytes(body) == _hex(vec["payload"])


_ERRORS = {"BufferTooSmall": BufferTooSmall, "BadMagic": BadMagic, "BadHeaderLen": BadHeaderLen,
           "UnknownFlags": UnknownFlags, "BadPayloadLen": BadPayloadLen}


@pytest.mark.parametrize("vec", VECTORS["envelope_errors"], ids=lambda v: f"{v['error']}-{v['hex'][:16]}")
def test_envelope_errors(vec: dict[str, Any]) -> None:
    with pytest.raises(_ERRORS[vec["error"]]) as info:
        envelope.decode(_hex(vec["hex"]))
    assert isinstance(info.value, byteor.DataGuardError)
    assert isinstance(info.value, EnvelopeError)


def test_envelope_capacity_and_buffer_checks() -> None:
    env = envelope.encode(b"\x00" * 10, codec_id=1, schema_id=1, msg_type=1, msg_version=1)
    with pytest.raises(BadPayloadLen, match="exceeds the 30-byte capacity"):
        envelope.decode_header(env, capacity=30)
    envelope.decode_header(env, capacity=34)
    slot = bytearray(64)
    slot[:len(env)] = env
    slot[22:24] = (50).to_bytes(2, "little")
    with pytest.raises(BufferTooSmall, match="needs 74 bytes"):
        envelope.decode_header(slot, capacity=100)


def test_encode_into_a_callers_buffer_at_an_offset() -> None:
    buf = bytearray(b"\xaa" * 40)
    n = envelope.encode_into(buf, 8, b"\x01\x02", codec_id=2, schema_id=3, msg_type=4, msg_version=5)
    assert n == 26
    assert buf[:8] == b"\xaa" * 8 and buf[34:] == b"\xaa" * 6
    header, body = envelope.decode(buf[8:34])
    assert (header.codec_id, header.schema_id, header.msg_type, header.msg_version) == (2, 3, 4, 5)
    assert bytes(body) == b"\x01\x02"
    with pytest.raises(BufferTooSmall):
        envelope.encode_into(bytearray(25), 0, b"\x01\x02", codec_id=1, schema_id=1, msg_type=1,
                             msg_version=1)
    with pytest.raises(BufferTooSmall):
        envelope.encode_into(memoryview(bytearray(40)), 20, b"", codec_id=1, schema_id=1, msg_type=1,
                             msg_version=1)


def test_encode_errors() -> None:
    with pytest.raises(UnknownFlags):
        envelope.encode(b"", codec_id=1, schema_id=1, msg_type=1, msg_version=1, flags=1)
    with pytest.raises(BadPayloadLen, match="65535"):
        envelope.encode(b"\x00" * 65536, codec_id=1, schema_id=1, msg_type=1, msg_version=1)
    with pytest.raises(byteor.DataGuardError, match="msg_version=65536"):
        envelope.encode(b"", codec_id=1, schema_id=1, msg_type=1, msg_version=65536)
    with pytest.raises(byteor.DataGuardError, match="schema_id"):
        envelope.encode(b"", codec_id=1, schema_id=2**64, msg_type=1, msg_version=1)


@given(st.binary(max_size=300), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
       st.sampled_from([1, 2]))
def test_envelope_round_trips(payload: bytes, schema_id: int, msg_type: int, version: int,
                              codec: int) -> None:
    env = envelope.encode(payload, codec_id=codec, schema_id=schema_id, msg_type=msg_type,
                          msg_version=version)
    assert len(env) == 24 + len(payload)
    header, body = envelope.decode(env)
    assert header == envelope.Header(0, codec, 24, schema_id, msg_type, version, len(payload))
    assert bytes(body) == payload
