"""Message framings of byte streams: how files, stdin and stdout carry messages.

Input framings (:class:`FrameParser`):

* ``lines``: one message per line; the ``\\n`` is not part of the message; a last line without
  ``\\n`` is a message too; an empty line is an empty message.
* ``hex``: one message per line written as hex digits; whitespace inside a line is ignored, blank
  lines are skipped; anything else is an error naming the 1-based line.
* ``len32``: a little-endian u32 length before each message; a truncated prefix or body is an
  error naming the byte offset.

Output framings (:func:`encoder`): ``hex`` (lowercase hex, one message per line), ``ascii`` (the
bytes as UTF-8 text, invalid sequences replaced, one per line), ``lines`` (the bytes and a
``\\n``), ``raw`` (the bytes as they are, no separator) and ``len32`` (the input framing, so a
``len32`` stream round-trips).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from .._errors import UsageError

__all__ = ["INPUT_FORMATS", "OUTPUT_FORMATS", "FrameParser", "encoder", "parse_hex"]

INPUT_FORMATS = ("lines", "hex", "len32")
OUTPUT_FORMATS = ("hex", "ascii", "raw", "lines", "len32")
_U32 = struct.Struct("<I")


def parse_hex(text: str, what: str) -> bytes:
    """``text`` as hex (whitespace ignored); :class:`UsageError` naming ``what`` and the problem."""
    cleaned = "".join(text.split())
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        bad = next((c for c in cleaned if c not in "0123456789abcdefABCDEF"), None)
        why = (f"invalid character {bad!r}" if bad is not None else
               f"odd number of hex digits ({len(cleaned)})")
        raise UsageError(f"{what} is not valid hex: {why}") from None


class FrameParser:
    """Incremental parser of one input framing. ``feed(chunk)`` returns the complete messages so
    far; ``finish()`` the last one at end of input. A malformed frame is kept in :attr:`error`
    (a :class:`UsageError`) after the messages before it were returned, and parsing stops there."""

    def __init__(self, fmt: str, *, label: str = "--input", max_message_bytes: int | None = None) -> None:
        if fmt not in INPUT_FORMATS:
            raise UsageError(f"input format must be one of {', '.join(INPUT_FORMATS)}, got {fmt!r}")
        self.fmt = fmt
        self.label = label
        self.max_message_bytes = max_message_bytes
        self.error: UsageError | None = None
        self._rest = b""
        self._line = 0      # lines consumed (lines, hex)
        self._offset = 0    # bytes consumed (len32)
        self._count = 0     # messages produced

    def feed(self, chunk: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        data = self._rest + chunk if self._rest else chunk
        if self.fmt == "len32":
            return self._len32(data)
        parts = data.split(b"\n")
        self._rest = parts.pop()
        return self._lines(parts)

    def finish(self) -> list[bytes]:
        if self.error is not None:
            return []
        rest, self._rest = self._rest, b""
        if self.fmt == "len32":
            if rest:
                at = self._offset
                if len(rest) < 4:
                    self.error = UsageError(f"{self.label} len32: truncated length prefix at byte {at}")
                else:
                    (n,) = _U32.unpack_from(rest)
                    self.error = UsageError(f"{self.label} len32: message at byte {at} announces {n} bytes, "
                                            f"only {len(rest) - 4} follow")
            return []
        return self._lines([rest]) if rest else []

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        if self.fmt == "lines":
            self._line += len(lines)
            self._count += len(lines)
            return lines
        out: list[bytes] = []
        for raw in lines:
            self._line += 1
            text = raw.decode("ascii", "replace").strip()
            if not text:
                continue
            try:
                out.append(parse_hex(text, f"{self.label} line {self._line}"))
            except UsageError as exc:
                self.error = exc
                break
        self._count += len(out)
        return out

    def _len32(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos = 0
        end = len(data)
        limit = self.max_message_bytes
        view = memoryview(data)
        while end - pos >= 4:
            (n,) = _U32.unpack_from(data, pos)
            if limit is not None and n > limit:
                self.error = UsageError(f"{self.label} len32: message {self._count + len(out)} at byte "
                                        f"{self._offset + pos} is {n} bytes, larger than the slot "
                                        f"({limit} bytes)")
                break
            if end - pos - 4 < n:
                break
            out.append(bytes(view[pos + 4:pos + 4 + n]))
            pos += 4 + n
        view.release()
        self._rest = data[pos:] if self.error is None else b""
        self._offset += pos
        self._count += len(out)
        return out


def encoder(fmt: str) -> Callable[[Sequence[bytes]], bytes]:
    """The function that turns a batch of messages into the bytes of output framing ``fmt``."""
    if fmt == "hex":
        return lambda batch: b"".join([m.hex().encode("ascii") + b"\n" for m in batch])
    if fmt == "ascii":
        return lambda batch: b"".join([m.decode("utf-8", "replace").encode("utf-8") + b"\n" for m in batch])
    if fmt == "lines":
        return lambda batch: b"".join([bytes(m) + b"\n" for m in batch])
    if fmt == "raw":
        return b"".join
    if fmt == "len32":
        pack = _U32.pack
        return lambda batch: b"".join([pack(len(m)) + bytes(m) for m in batch])
    raise UsageError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
