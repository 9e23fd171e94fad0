"""The USM1 envelope, v1: a 24-byte little-endian header, then the payload.

Byte layout (offsets in bytes)::

    0  magic        4  b"USM1"
    4  flags        2  u16, no bits defined in v1 (any set bit is rejected)
    6  codec_id     1  u8: 1 = mapkv, 2 = row
    7  header_len   1  u8: 24 when written; readers accept >= 24 and skip the extra bytes
    8  schema_id    8  u64
    16 msg_type     4  u32
    20 msg_version  2  u16
    22 payload_len  2  u16
    24 payload      payload_len bytes, starting at header_len

Decoding checks, in this order: at least 24 bytes (:class:`BufferTooSmall`), magic (:class:`BadMagic`),
``header_len >= 24`` (:class:`BadHeaderLen`), flags (:class:`UnknownFlags`), ``header_len + payload_len``
within the capacity (:class:`BadPayloadLen`), then within the bytes given (:class:`BufferTooSmall`).
Bytes after the envelope (the rest of a slot) are ignored.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import BadHeaderLen, BadMagic, BadPayloadLen, BufferTooSmall, DataGuardError, UnknownFlags

__all__ = [
    "CODEC_IDS",
    "CODEC_MAPKV",
    "CODEC_NAMES",
    "CODEC_ROW",
    "KNOWN_FLAGS",
    "MAGIC",
    "MAX_PAYLOAD_LEN",
    "V1_HEADER_LEN",
    "Header",
    "decode",
    "decode_header",
    "encode",
    "encode_into",
]

MAGIC = b"USM1"
V1_HEADER_LEN = 24
KNOWN_FLAGS = 0
MAX_PAYLOAD_LEN = 0xFFFF
CODEC_MAPKV = 1
CODEC_ROW = 2
CODEC_IDS: dict[str, int] = {"mapkv": CODEC_MAPKV, "row": CODEC_ROW}
CODEC_NAMES: dict[int, str] = {v: k for k, v in CODEC_IDS.items()}

_HEADER = struct.Struct("<4sHBBQIHH")
assert _HEADER.size == V1_HEADER_LEN

_LIMITS = (("codec_id", 0xFF), ("schema_id", 2**64 - 1), ("msg_type", 2**32 - 1), ("msg_version", 0xFFFF))


class Header(NamedTuple):
    """A decoded USM1 header. ``header_len`` is what the envelope says (>= 24)."""

    flags: int
    codec_id: int
    header_len: int
    schema_id: int
    msg_type: int
    msg_version: int
    payload_len: int

    def as_json(self) -> dict[str, int | str]:
        out: dict[str, int | str] = {"magic": "USM1", **self._asdict()}
        return out


def encode_into(buf: bytearray | memoryview, offset: int, payload: bytes | bytearray | memoryview, *,
                codec_id: int, schema_id: int, msg_type: int, msg_version: int, flags: int = 0) -> int:
    """Write a v1 envelope (24-byte header + ``payload``) into ``buf`` at ``offset``; return bytes written.

    Raises :class:`UnknownFlags` for flag bits v1 does not define, :class:`BadPayloadLen` for a payload
    over 65535 bytes, :class:`BufferTooSmall` when ``buf`` has no room, and :class:`DataGuardError`
    for a header field outside its width.
    """
    if flags & ~KNOWN_FLAGS or flags < 0:
        raise UnknownFlags(f"flags 0x{flags:04x} set bits that USM1 v1 does not define")
    n = len(payload)
    if n > MAX_PAYLOAD_LEN:
        raise BadPayloadLen(f"payload is {n} bytes; USM1 v1 allows at most {MAX_PAYLOAD_LEN}")
    values = (codec_id, schema_id, msg_type, msg_version)
    for (name, limit), value in zip(_LIMITS, values, strict=True):
        if not 0 <= value <= limit:
            raise DataGuardError(f"{name}={value} is outside 0..{limit}")
    total = V1_HEADER_LEN + n
    if offset < 0 or offset + total > len(buf):
        raise BufferTooSmall(f"envelope needs {total} bytes at offset {offset}; buffer is {len(buf)} bytes")
    _HEADER.pack_into(buf, offset, MAGIC, flags, codec_id, V1_HEADER_LEN, schema_id, msg_type,
                      msg_version, n)
    start = offset + V1_HEADER_LEN
    buf[start:start + n] = payload
    return total


def encode(payload: bytes | bytearray | memoryview, *, codec_id: int, schema_id: int, msg_type: int,
           msg_version: int, flags: int = 0) -> bytes:
    """A new v1 envelope as bytes (see :func:`encode_into` for the errors)."""
    buf = bytearray(V1_HEADER_LEN + len(payload))
    encode_into(buf, 0, payload, codec_id=codec_id, schema_id=schema_id, msg_type=msg_type,
                msg_version=msg_version, flags=flags)
    return bytes(buf)


def decode_header(buf: bytes | bytearray | memoryview, capacity: int | None = None) -> Header:
    """Decode and check the header of the envelope at the start of ``buf``.

    ``capacity`` is the slot size the envelope must fit (default: ``len(buf)``). Raises the
    :class:`~byteor.dataguard.errors.EnvelopeError` subclass that names the problem.
    """
    size = len(buf)
    if size < V1_HEADER_LEN:
        raise BufferTooSmall(f"envelope is {size} bytes; the USM1 v1 header needs {V1_HEADER_LEN}")
    (magic, flags, codec_id, header_len, schema_id, msg_type, msg_version,
     payload_len) = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise BadMagic(f"bad magic {bytes(magic)!r}; expected b'USM1'")
    if header_len < V1_HEADER_LEN:
        raise BadHeaderLen(f"header_len={header_len} is below the v1 header length {V1_HEADER_LEN}")
    if flags & ~KNOWN_FLAGS:
        raise UnknownFlags(f"flags 0x{flags:04x} set bits that USM1 v1 does not define")
    end = header_len + payload_len
    cap = size if capacity is None else capacity
    if end > cap:
        raise BadPayloadLen(f"header_len {header_len} + payload_len {payload_len} = {end} exceeds the "
                            f"{cap}-byte capacity")
    if end > size:
        raise BufferTooSmall(f"envelope needs {end} bytes; only {size} given")
    return Header(flags, codec_id, header_len, schema_id, msg_type, msg_version, payload_len)


def decode(buf: bytes | bytearray | memoryview, capacity: int | None = None) -> tuple[Header, memoryview]:
    """The header and a zero-copy view of the payload (errors as :func:`decode_header`)."""
    header = decode_header(buf, capacity)
    view = memoryview(buf)
    return header, view[header.header_len:header.header_len + header.payload_len]
