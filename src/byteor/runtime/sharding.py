"""Shard routing: which ring of ``shards=N`` a message goes to.

``per_key`` (and ``strict``, which has one shard) route by a **stable** hash of the shard key
``bytes:<offset>:<len>``: CRC-32 (``zlib.crc32``, C speed, the same on every host and run, never
Python's salted ``hash()``) of ``msg[offset:offset+len]`` modulo N. A message shorter than the key
window hashes what it has (possibly nothing), so it still routes deterministically. ``unordered``
spreads round robin. The ``--sp`` executor and the multi-process executor share this router, so both
assign every message to the same shard.
"""

from __future__ import annotations

import zlib

from ..spec.model import SingleRingSpecV1

__all__ = ["BytesLike", "Router", "shard_of"]

#: What producers accept: one message as a contiguous bytes-like object.
BytesLike = bytes | bytearray | memoryview


def shard_of(msg: BytesLike, offset: int, length: int, shards: int) -> int:
    """The shard of one message for key window ``[offset, offset+length)`` among ``shards``."""
    view = memoryview(msg)
    return zlib.crc32(view[offset:offset + length]) % shards


class Router:
    """Routes messages for one spec. ``route(msg)`` is allocation-light and does no lookups."""

    __slots__ = ("_end", "_next", "_offset", "mode", "shards")

    def __init__(self, spec: SingleRingSpecV1) -> None:
        self.shards = spec.shards
        self._next = 0
        if spec.shards == 1:
            self.mode = "single"
            self._offset = self._end = 0
        elif spec.ordering == "unordered" or spec.shard_key is None:
            self.mode = "round_robin"
            self._offset = self._end = 0
        else:
            self.mode = "key"
            self._offset = spec.shard_key.offset
            self._end = spec.shard_key.offset + spec.shard_key.length

    def route(self, msg: BytesLike) -> int:
        if self.mode == "single":
            return 0
        if self.mode == "key":
            return zlib.crc32(memoryview(msg)[self._offset:self._end]) % self.shards
        n = self._next
        self._next = (n + 1) % self.shards
        return n

    def unroute(self) -> None:
        """Take back the last :meth:`route` of a message that was not published after all, so
        the next call routes it (round robin) to the same shard again."""
        if self.mode == "round_robin":
            self._next = (self._next - 1) % self.shards
