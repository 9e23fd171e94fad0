"""Per-role counters shared between a role process and the parent (a small mmap'd file).

Layout: 128 little-endian u64 words (``byteor._native.ROLE_STATS_BYTES``): ``[0]`` messages in,
``[1]`` heartbeat (monotonic ns), ``[2]`` pid, ``[3]`` messages a stage role dropped on purpose (its
function returned ``None``/``DROP``), ``[4+k]`` messages written to output k, ``[12+k]`` drops on
output k, ``[20+k]`` journal position of input k (the next record index; survives a restart),
``[32..]`` the batch record of the native role loop (``_native.run_role``: which input and output
ranges the last batch covered, so a restarted role completes it instead of publishing it twice).
Written by the role after each batch, read by the parent for ``lane_graph_state.json`` and liveness.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

from ... import _native
from ..._fileio import open_existing_private

__all__ = ["MAX_PORTS", "RoleStats"]

MAX_PORTS = 8
_SIZE = _native.ROLE_STATS_BYTES
_U64 = struct.Struct("<Q")
_IN, _BEAT, _PID, _FILTERED = 0, 1, 2, 3
_WRITTEN, _DROPS, _JPOS = 4, 12, 20


class RoleStats:
    __slots__ = ("_mm", "path")

    def __init__(self, path: str, *, create: bool = False) -> None:
        self.path = path
        if create:
            fd = open_existing_private(path, os.O_RDWR)  # no link followed, private
            os.ftruncate(fd, 0)
            os.ftruncate(fd, _SIZE)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._mm = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    def _get(self, word: int) -> int:
        return int(_U64.unpack_from(self._mm, word * 8)[0])

    def _set(self, word: int, value: int) -> None:
        _U64.pack_into(self._mm, word * 8, value)

    @property
    def messages_in(self) -> int:
        return self._get(_IN)

    @property
    def filtered(self) -> int:
        return self._get(_FILTERED)

    def written(self, k: int) -> int:
        return self._get(_WRITTEN + k)

    def drops(self, k: int) -> int:
        return self._get(_DROPS + k)

    def journal_pos(self, k: int) -> int:
        return self._get(_JPOS + k)

    @property
    def heartbeat(self) -> int:
        return self._get(_BEAT)

    @property
    def pid(self) -> int:
        return self._get(_PID)

    def update(self, messages_in: int, written: list[int], drops: list[int], beat_ns: int,
               filtered: int = 0) -> None:
        self._set(_IN, messages_in)
        self._set(_FILTERED, filtered)
        for k, n in enumerate(written):
            self._set(_WRITTEN + k, n)
        for k, n in enumerate(drops):
            self._set(_DROPS + k, n)
        self._set(_BEAT, beat_ns)

    def set_written(self, k: int, n: int) -> None:
        self._set(_WRITTEN + k, n)

    def set_messages_in(self, n: int) -> None:
        self._set(_IN, n)

    @property
    def buffer(self) -> Any:
        """The mapping itself, for the native role loop that keeps the counters while it runs."""
        return self._mm

    def set_pid(self, pid: int) -> None:
        self._set(_PID, pid)

    def set_journal_pos(self, k: int, pos: int) -> None:
        self._set(_JPOS + k, pos)

    def close(self) -> None:
        self._mm.close()
