"""In-process lanes for the single-process (``--sp``) LaneGraph runner.

Same semantics as the shared-memory lanes, without processes: a bounded ring of ``capacity``
messages with one read position per reader cell; the slowest cell gates the writer (a fanout lane
keeps a message until every subscriber has read it). ``events``/``mpsc`` lanes have one cell.
Not thread-safe: the SP runner drives every role from one thread, deterministically.
"""

from __future__ import annotations

__all__ = ["MemoryLane"]


class MemoryLane:
    """A bounded in-memory lane with ``cells`` independent readers."""

    __slots__ = (
        "_buf", "_mask", "capacity", "cells", "drops", "kind", "name", "reads", "slot_bytes", "write_pos",
    )

    def __init__(self, name: str, kind: str, capacity: int, slot_bytes: int, cells: int) -> None:
        if capacity < 1 or capacity & (capacity - 1):
            raise ValueError(f"lane {name!r}: capacity {capacity} is not a power of two")
        self.name = name
        self.kind = kind
        self.capacity = capacity
        self.slot_bytes = slot_bytes
        self.cells = cells
        self._buf: list[bytes | None] = [None] * capacity
        self._mask = capacity - 1
        self.write_pos = 0
        self.reads = [0] * cells
        self.drops = 0

    def has_room(self) -> bool:
        return self.write_pos - min(self.reads) < self.capacity

    def push(self, data: bytes) -> None:
        """Append one message; the caller checked :meth:`has_room`."""
        self._buf[self.write_pos & self._mask] = data
        self.write_pos += 1

    def available(self, cell: int) -> int:
        return self.write_pos - self.reads[cell]

    def peek(self, cell: int) -> bytes:
        msg = self._buf[self.reads[cell] & self._mask]
        assert msg is not None
        return msg

    def pop(self, cell: int) -> bytes:
        pos = self.reads[cell]
        msg = self._buf[pos & self._mask]
        assert msg is not None
        self.reads[cell] = pos + 1
        return msg

    def fill(self) -> int:
        return self.write_pos - min(self.reads)
