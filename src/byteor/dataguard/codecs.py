"""The two payload codecs, byte-exact: ``mapkv`` (codec 1) and ``row`` (codec 2).

Varints are unsigned LEB128 (7 bits per byte, low group first, high bit = more). A value is
``varint(tag)`` then its content::

    tag 0 string   varint(len) + UTF-8
    tag 1 int      varint(zigzag(i64))        zigzag(n) = (n << 1) ^ (n >> 63)
    tag 2 bytes    varint(len) + bytes
    tag 3 bool     one byte, 0 or 1

``mapkv`` = ``varint(count)`` then ``count`` pairs ``varint(len) + UTF-8 key, value``; :func:`encode_mapkv`
writes keys sorted by their UTF-8 bytes, the decoder accepts any order but no duplicate key.
``row`` = the schema's fields in order, each value as above without its key.
Decoders fail with :class:`CodecError` on truncation, an over-long varint, an unknown tag, invalid
UTF-8, a bool byte other than 0/1, a duplicate key, or trailing bytes.

In JSON (``encode --json``, ``decode``) a bytes value is ``{"hex": "..."}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import CodecError

__all__ = [
    "TAG_BOOL",
    "TAG_BYTES",
    "TAG_INT",
    "TAG_STRING",
    "TYPE_TAGS",
    "Value",
    "decode_mapkv",
    "decode_row",
    "decode_values",
    "encode_mapkv",
    "encode_row",
    "read_varint",
    "tag_of",
    "unzigzag",
    "value_from_json",
    "value_to_json",
    "write_value",
    "write_varint",
    "zigzag",
]

TAG_STRING = 0
TAG_INT = 1
TAG_BYTES = 2
TAG_BOOL = 3
TYPE_TAGS: dict[str, int] = {"string": TAG_STRING, "int": TAG_INT, "bytes": TAG_BYTES, "bool": TAG_BOOL}
TAG_TYPES: dict[int, str] = {v: k for k, v in TYPE_TAGS.items()}

Value = str | int | bytes | bool

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1


def zigzag(n: int) -> int:
    return ((n << 1) ^ (n >> 63)) & _U64_MAX


def unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


def write_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (0..2**64-1) as unsigned LEB128."""
    if value < 0 or value > _U64_MAX:
        raise CodecError(f"varint value {value} is outside 0..2**64-1")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Read an unsigned LEB128 varint at ``pos``; return ``(value, next_pos)``."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise CodecError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result > _U64_MAX:
                raise CodecError(f"varint ending at byte {pos - 1} overflows 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise CodecError(f"varint at byte {pos - 10} is longer than 10 bytes")


def tag_of(value: Value) -> int:
    if isinstance(value, bool):
        return TAG_BOOL
    if isinstance(value, int):
        return TAG_INT
    if isinstance(value, str):
        return TAG_STRING
    if isinstance(value, bytes | bytearray | memoryview):
        return TAG_BYTES
    raise CodecError(f"cannot encode a {type(value).__name__} value")


def _write_content(out: bytearray, tag: int, value: Value) -> None:
    if tag == TAG_STRING:
        data = str(value).encode("utf-8")
        write_varint(out, len(data))
        out += data
    elif tag == TAG_INT:
        assert isinstance(value, int)
        if not _I64_MIN <= value <= _I64_MAX:
            raise CodecError(f"integer {value} does not fit an i64")
        write_varint(out, zigzag(value))
    elif tag == TAG_BYTES:
        assert isinstance(value, bytes | bytearray | memoryview)
        write_varint(out, len(value))
        out += value
    else:
        out.append(1 if value else 0)


def write_value(out: bytearray, value: Value, tag: int | None = None) -> None:
    """Append ``varint(tag)`` + content; ``tag`` defaults to the value's own type."""
    t = tag_of(value) if tag is None else tag
    write_varint(out, t)
    _write_content(out, t, value)


def _read_value(buf: bytes | bytearray | memoryview, pos: int, where: str) -> tuple[Value, int]:
    tag, pos = read_varint(buf, pos)
    if tag in (TAG_STRING, TAG_BYTES):
        n, pos = read_varint(buf, pos)
        end = pos + n
        if end > len(buf):
            raise CodecError(f"{where}: value of {n} bytes runs past the payload end")
        raw = bytes(buf[pos:end])
        if tag == TAG_BYTES:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise CodecError(f"{where}: string is not valid UTF-8") from exc
    if tag == TAG_INT:
        u, pos = read_varint(buf, pos)
        return unzigzag(u), pos
    if tag == TAG_BOOL:
        if pos >= len(buf):
            raise CodecError(f"{where}: truncated bool")
        b = buf[pos]
        if b > 1:
            raise CodecError(f"{where}: bool byte is {b}, not 0 or 1")
        return b == 1, pos + 1
    raise CodecError(f"{where}: unknown value tag {tag}")


def encode_mapkv(obj: Mapping[str, Value]) -> bytes:
    """Encode a mapping as mapkv, keys sorted by their UTF-8 bytes."""
    items = sorted(((k.encode("utf-8"), v) for k, v in obj.items()), key=lambda kv: kv[0])
    out = bytearray()
    write_varint(out, len(items))
    for key, value in items:
        write_varint(out, len(key))
        out += key
        write_value(out, value)
    return bytes(out)


def decode_mapkv(buf: bytes | bytearray | memoryview) -> dict[str, Value]:
    """Decode a mapkv payload (any key order; duplicates and trailing bytes are errors)."""
    count, pos = read_varint(buf, 0)
    out: dict[str, Value] = {}
    for i in range(count):
        n, pos = read_varint(buf, pos)
        end = pos + n
        if end > len(buf):
            raise CodecError(f"mapkv pair {i}: key of {n} bytes runs past the payload end")
        try:
            key = bytes(buf[pos:end]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"mapkv pair {i}: key is not valid UTF-8") from exc
        if key in out:
            raise CodecError(f"mapkv pair {i}: duplicate key {key!r}")
        out[key], pos = _read_value(buf, end, f"mapkv key {key!r}")
    if pos != len(buf):
        raise CodecError(f"mapkv payload has {len(buf) - pos} trailing bytes after {count} pairs")
    return out


def encode_row(fields: Sequence[tuple[str, str]], obj: Mapping[str, Value]) -> bytes:
    """Encode ``obj`` as a row: ``fields`` is the schema's ``(name, type)`` list, in order.

    Every field must be present with a value of its type; a key that is not a field is an error.
    """
    names = {name for name, _ in fields}
    extra = sorted(set(obj) - names)
    if extra:
        raise CodecError(f"row: {extra[0]!r} is not a field of the schema")
    out = bytearray()
    for name, type_name in fields:
        if name not in obj:
            raise CodecError(f"row: field {name!r} is missing (row payloads carry every field)")
        value = obj[name]
        tag = TYPE_TAGS[type_name]
        if tag_of(value) != tag:
            raise CodecError(f"row: field {name!r} is {type_name}, got {TAG_TYPES[tag_of(value)]}")
        write_value(out, value, tag)
    return bytes(out)


def decode_row(fields: Sequence[tuple[str, str]], buf: bytes | bytearray | memoryview) -> dict[str, Value]:
    """Decode a row payload against the schema's ``(name, type)`` list; each tag must match its type."""
    out: dict[str, Value] = {}
    pos = 0
    for name, type_name in fields:
        start = pos
        value, pos = _read_value(buf, pos, f"row field {name!r}")
        tag = TYPE_TAGS[type_name]
        if tag_of(value) != tag:
            raise CodecError(f"row field {name!r} at byte {start}: tag says "
                             f"{TAG_TYPES[tag_of(value)]}, the schema says {type_name}")
        out[name] = value
    if pos != len(buf):
        raise CodecError(f"row payload has {len(buf) - pos} trailing bytes after {len(fields)} fields")
    return out


def decode_values(buf: bytes | bytearray | memoryview) -> list[Value]:
    """Every tagged value of a row payload in wire order, without a schema (tags self-describe)."""
    out: list[Value] = []
    pos = 0
    while pos < len(buf):
        value, pos = _read_value(buf, pos, f"row value {len(out)}")
        out.append(value)
    return out


def value_from_json(value: Any, where: str) -> Value:
    """A JSON value as a payload value: str, int, bool, or ``{"hex": "..."}`` for bytes."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _I64_MIN <= value <= _I64_MAX:
            raise CodecError(f"{where}: integer {value} does not fit an i64")
        return value
    if isinstance(value, dict) and set(value) == {"hex"} and isinstance(value["hex"], str):
        try:
            return bytes.fromhex(value["hex"])
        except ValueError as exc:
            raise CodecError(f"{where}: {{\"hex\": ...}} is not valid hex") from exc
    raise CodecError(f"{where}: unsupported JSON value {value!r} (use a string, integer, boolean "
                     'or {"hex": "..."} for bytes)')


def value_to_json(value: Value) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    return value
