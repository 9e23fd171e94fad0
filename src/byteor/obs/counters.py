"""The per-run counters file: counters that outlive the process that counts them.

A multi-process run keeps one small file, ``counters.bin``, in its ring or lane directory (shared
memory). The run creates it before any stage process starts; each stage or role process attaches
its own **row** and increments it in place; the supervisor writes each process's state, pid and
restart count into the same row; the metrics thread, ``byteor top`` and ``snapshot`` only read it.
A stage killed by SIGKILL and restarted attaches the same row and goes on counting from where its
predecessor was: nothing resets but the file itself, which ends with the run.

Layout (little-endian; version 1)::

    header, 64 bytes: magic "BYTEORC1", u32 version, u32 rows, u32 row bytes, u32 words per row, pad
    row i, at 64 + i * 320 (rows are 64-byte aligned, so two processes never share a cache line):
        56 bytes  name (UTF-8, NUL padded): "session", a stage id, a role name
        u32 kind  (1 session, 2 stage, 3 role)
        u32 shard
        32 x u64  words, by :data:`WORDS` (state, restarts, pid, messages, actions, DataGuard)

Every word has exactly one writer (the supervisor, the session's egress, or the stage process that
owns the row), so an increment is a plain load, add and 8-byte aligned store through a memoryview:
no lock, no system call, no allocation. A reader may see a value one increment old, never a torn one.

In a process that was given no row (the parent resolving stages before it starts them, ``--sp``,
tests) :func:`current` is a detached in-memory row: counting into it costs the same and is never read.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "COUNTERS_FILE",
    "DATAGUARD_COUNTERS",
    "KIND_ROLE",
    "KIND_SESSION",
    "KIND_STAGE",
    "STATES",
    "WORDS",
    "CountersFile",
    "Row",
    "bind",
    "bind_config",
    "counters_path",
    "current",
    "every",
]

COUNTERS_FILE = "counters.bin"
MAGIC = b"BYTEORC1"
VERSION = 1
HEADER_BYTES = 64
NAME_BYTES = 56
ROW_WORDS = 32
ROW_BYTES = 64 + ROW_WORDS * 8
_HEADER = struct.Struct("<8sIIII")
_ROW_HEAD = struct.Struct(f"<{NAME_BYTES}sII")

KIND_SESSION, KIND_STAGE, KIND_ROLE = 1, 2, 3
KINDS = {KIND_SESSION: "session", KIND_STAGE: "stage", KIND_ROLE: "role"}

#: Process states the supervisor writes (word ``state``).
STATES = ("unknown", "starting", "running", "restarting", "exited", "failed")
STARTING, RUNNING, RESTARTING, EXITED, FAILED = 1, 2, 3, 4, 5

#: The DataGuard report counters, in the report's order (``byteor.dataguard.report.COUNTERS``).
DATAGUARD_COUNTERS = ("seen", "accepted", "rejected", "decode_err", "codec_mismatch", "schema_missing",
                      "schema_incompatible", "redact_overflow", "out_drop", "out_forward_input",
                      "out_forward_output", "redact_noop")

#: Word index of each counter in a row.
WORDS: dict[str, int] = {
    "state": 0, "restarts": 1, "pid": 2,
    "messages_in": 4, "messages_out": 5, "dropped": 6,
    "actions_performed": 8, "actions_failed": 9, "actions_dead_lettered": 10, "actions_dry_run": 11,
    **{f"dataguard_{name}": 12 + i for i, name in enumerate(DATAGUARD_COUNTERS)},
}
assert max(WORDS.values()) < ROW_WORDS


def counters_path(directory: str) -> str:
    return os.path.join(directory, COUNTERS_FILE)


class Row:
    """One process's row. ``live`` rows are in a counters file; detached rows are private memory."""

    __slots__ = ("_base", "_words", "kind", "live", "name", "shard")

    def __init__(self, words: memoryview, base: int, *, name: str, kind: int, shard: int, live: bool) -> None:
        self._words = words
        self._base = base
        self.name = name
        self.kind = kind
        self.shard = shard
        self.live = live

    @classmethod
    def detached(cls, name: str = "detached") -> Row:
        return cls(memoryview(bytearray(ROW_WORDS * 8)).cast("Q"), 0, name=name, kind=0, shard=0, live=False)

    def get(self, word: int) -> int:
        return int(self._words[self._base + word])

    def set(self, word: int, value: int) -> None:
        self._words[self._base + word] = value

    def add(self, word: int, n: int = 1) -> None:
        i = self._base + word
        self._words[i] += n

    def incrementer(self, word: int) -> Callable[[], None]:
        """A zero-argument function adding 1 to ``word``: what a per-message path calls."""
        words = self._words
        i = self._base + word

        def incr() -> None:
            words[i] += 1

        return incr

    def values(self) -> dict[str, int]:
        return {name: int(self._words[self._base + w]) for name, w in WORDS.items()}


class CountersFile:
    """A counters file: :meth:`create` (the run), :meth:`attach` (a stage process, read-write) or
    :meth:`open` (an observer, read-only). Raises ``OSError``/``ValueError`` for a missing or
    malformed file; observers treat both as "no counters"."""

    def __init__(self, path: str, mm: mmap.mmap, *, writable: bool, inode: int = 0) -> None:
        self.path = path
        self._mm = mm
        magic, version, rows, row_bytes, words = _HEADER.unpack_from(mm, 0)
        if magic != MAGIC or version != VERSION or row_bytes != ROW_BYTES or words != ROW_WORDS:
            mm.close()
            raise ValueError(f"{path}: not a byteor counters file (version {VERSION})")
        if len(mm) < HEADER_BYTES + rows * ROW_BYTES:
            mm.close()
            raise ValueError(f"{path}: counters file is truncated")
        self.n_rows = rows
        self.writable = writable
        self._view = memoryview(mm)
        self._words = self._view.cast("Q")
        #: the file's inode: an observer re-opens the file when a new run replaced it
        self.inode = inode

    @classmethod
    def create(cls, path: str, rows: Sequence[tuple[str, int, int]]) -> CountersFile:
        """A new file (replacing a stale one) with one zeroed row per ``(name, kind, shard)``."""
        size = HEADER_BYTES + len(rows) * ROW_BYTES
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        _HEADER.pack_into(mm, 0, MAGIC, VERSION, len(rows), ROW_BYTES, ROW_WORDS)
        for i, (name, kind, shard) in enumerate(rows):
            raw = name.encode("utf-8")[:NAME_BYTES]
            _ROW_HEAD.pack_into(mm, HEADER_BYTES + i * ROW_BYTES, raw, kind, shard)
        return cls(path, mm, writable=True)

    @classmethod
    def attach(cls, path: str) -> CountersFile:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        return cls(path, mm, writable=True)

    @classmethod
    def open(cls, path: str) -> CountersFile:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            ino = os.fstat(fd).st_ino
            mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        return cls(path, mm, writable=False, inode=ino)

    def _head(self, i: int) -> tuple[str, int, int]:
        raw, kind, shard = _ROW_HEAD.unpack_from(self._mm, HEADER_BYTES + i * ROW_BYTES)
        return raw.rstrip(b"\0").decode("utf-8", "replace"), int(kind), int(shard)

    def row(self, i: int) -> Row:
        if not 0 <= i < self.n_rows:
            raise IndexError(f"{self.path}: no row {i} (the file has {self.n_rows})")
        name, kind, shard = self._head(i)
        base = (HEADER_BYTES + i * ROW_BYTES + 64) // 8
        return Row(self._words, base, name=name, kind=kind, shard=shard, live=True)

    def rows(self) -> list[dict[str, Any]]:
        """Every row as ``{"row", "name", "kind", "shard", "state", <counter>: n, ...}``."""
        out = []
        for i in range(self.n_rows):
            r = self.row(i)
            values = r.values()
            state = values["state"]
            out.append({"row": i, "name": r.name, "kind": KINDS.get(r.kind, "unknown"), "shard": r.shard,
                        **values, "state": STATES[state] if state < len(STATES) else "unknown"})
        return out

    def close(self) -> None:
        self._words.release()
        self._view.release()
        with contextlib.suppress(BufferError):  # a Row still referenced elsewhere: the map goes with it
            self._mm.close()


# --------------------------------------------------------------------------------------------------
# This process's row
# --------------------------------------------------------------------------------------------------

class _Process:
    """This process's binding: its row, the file that holds it, the publishing thread."""

    def __init__(self) -> None:
        self.detached = Row.detached()
        self.row = self.detached
        self.file: CountersFile | None = None
        self.sync_fns: list[Callable[[], None]] = []
        self.sync_lock = threading.Lock()
        self.sync_thread: threading.Thread | None = None


_PROCESS = _Process()


def current() -> Row:
    """The row this process counts into (a detached one unless :func:`bind` gave it one). Stage
    families take it once, when they resolve, and keep it."""
    return _PROCESS.row


@contextlib.contextmanager
def bind(row: Row) -> Iterator[Row]:
    """Make ``row`` this process's :func:`current` row for the ``with`` block."""
    old = _PROCESS.row
    _PROCESS.row = row
    try:
        yield row
    finally:
        _PROCESS.row = old


def bind_config(value: Any) -> None:
    """In a stage or role process: attach ``[path, row]`` (its config's ``counters`` entry) and make
    that row :func:`current` for the life of the process. A missing or unreadable file leaves the
    detached row (the run's metrics then lack this process's counts; it still runs)."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return
    path, index = value
    try:
        _PROCESS.file = CountersFile.attach(str(path))
        _PROCESS.row = _PROCESS.file.row(int(index))
    except (OSError, ValueError, IndexError):
        _PROCESS.row = _PROCESS.detached


# --------------------------------------------------------------------------------------------------
# Periodic publishing, for counters kept elsewhere (the DataGuard kernel counts in C)
# --------------------------------------------------------------------------------------------------

_SYNC_EVERY_S = 0.25


def _sync_loop() -> None:
    event = threading.Event()
    while True:
        event.wait(_SYNC_EVERY_S)
        with _PROCESS.sync_lock:
            fns = list(_PROCESS.sync_fns)
        for fn in fns:
            with contextlib.suppress(Exception):  # a publishing hiccup never stops the stage
                fn()


def every(fn: Callable[[], None]) -> Callable[[], None]:
    """Call ``fn`` about every 250 ms from one daemon thread of this process (started on first use)
    until the returned function is called; the stage's own loop pays nothing per message."""
    proc = _PROCESS
    with proc.sync_lock:
        proc.sync_fns.append(fn)
        if proc.sync_thread is None:
            proc.sync_thread = threading.Thread(target=_sync_loop, name="byteor-counters", daemon=True)
            proc.sync_thread.start()

    def cancel() -> None:
        with proc.sync_lock, contextlib.suppress(ValueError):
            proc.sync_fns.remove(fn)

    return cancel
