"""Journal lanes: an append-only segmented log on disk, crash-consistent by two-phase commit.

A journal is a directory of fixed-size segment files ``seg-<N>.journal`` (N zero-padded decimal, from
0, one more per segment). Each segment starts with a 128-byte header (format version 2: index, first
record index, the spec hash of the pipeline that wrote it, a checksum), then records: a 16-byte
header (u32 little-endian payload length, u32 flags with bit 0 ``COMMITTED``, u32 CRC-32 of the
length and payload) and the payload padded with zeros to 8 bytes. The byte-by-byte layout is in
``docs/lanegraph.md`` and in ``byteor/_native/journal.c``.

Guarantees:

* A reader never returns a half-written or damaged record: it stops at the first record whose
  ``COMMITTED`` flag is not set (the writer stores the flag last, with release ordering, after the
  payload and its checksum), and a committed record whose checksum does not match is corruption.
* Corruption is reported, never skipped (:class:`JournalCorrupt` names the file and byte offset):
  a damaged header or record, a segment whose header names another index than its file, segment
  indexes that do not increase by one, a gap between one segment's last record and the next
  segment's first, a sealed segment holding fewer records than it was sealed with. Record positions
  are never renumbered: a position is the segment's first record index plus the record's place in it.
* A writer killed at any point loses nothing it committed. Reopening the directory finds the last
  committed record, zeroes a half-written tail (a reservation without commit) and appends after it.
* Segment files are allocated in full when created (``posix_fallocate``), so a full disk is a clean
  :class:`~byteor.PipelineFailed` when a segment is created, never a ``SIGBUS`` in a writer or reader.
* What survives a *power loss* depends on the fsync posture: ``none`` (nothing is forced to disk; a
  process crash loses nothing, a kernel crash or power loss may lose recent records), ``segment``
  (each full segment is synced at rollover and on ``flush``/``close``: a power loss loses at most the
  records of the open segment since the last flush), ``always`` (every append is synced before
  ``append`` returns: nothing acknowledged is lost, at the cost of one ``msync`` per record).
* One writer per directory (an advisory ``flock`` on ``writer.lock``, released by the kernel when the
  writer dies). Any number of readers, each with its own position (a record index, global across
  segments). Retention (``max_segments``) removes the oldest segments; a reader whose position was
  removed gets :class:`JournalOverrun`, never silently skipped records.
* The directory is private (created 0700 and checked, see :mod:`byteor._fileio`), segment files are
  0600, and no file is opened through a symlink.

Record positions are global 0-based indexes: ``append`` returns the index of the record it wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from .. import _native
from .._errors import ArtifactError, PipelineFailed, UsageError
from .._fileio import ensure_private_dir, open_existing_private, open_new
from .._schemas import SCHEMA_VERSIONS

__all__ = [
    "FLAG_COMMITTED",
    "FSYNC_POSTURES",
    "HEADER_BYTES",
    "MAGIC",
    "RECORD_HEADER_BYTES",
    "JournalCorrupt",
    "JournalOverrun",
    "JournalReader",
    "JournalSubscription",
    "JournalWriter",
    "SegmentHeader",
    "list_segments",
    "native_available",
    "segment_name",
]

MAGIC = b"BYTEORJL"
#: Journal format version: 2 added the spec hash, the record checksum and the sealed record count.
VERSION = SCHEMA_VERSIONS["journal"]
HEADER_BYTES = 128
RECORD_HEADER_BYTES = 16
FLAG_COMMITTED = 1
SEGMENT_FLAG_SEALED = 1
NO_SPEC_HASH = bytes(32)
FSYNC_POSTURES = ("none", "segment", "always")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_SLOT_BYTES = 256

_SEGMENT_RE = re.compile(r"seg-([0-9]+)\.journal")
# magic, version, header_bytes, segment index, segment_bytes, first record, created ns, max payload,
# reserved, spec hash: the fixed part, covered by the header checksum at offset 88
_HEAD = struct.Struct("<8sIIQQQQII32s")
_U32 = struct.Struct("<I")
_RECORD = struct.Struct("<II")
_SEAL = struct.Struct("<IQ")  # segment flags, record count: covered by the seal checksum at 104
_OFF_CRC = 88
_OFF_FLAGS = 92
_OFF_SEAL_CRC = 104
_OFF_RECORD_CRC = 8
_ZEROS = bytes(16)
_PAGE = mmap.PAGESIZE

FsyncPosture = Literal["none", "segment", "always"]


class JournalCorrupt(ArtifactError):
    """A journal file breaks the format; ``segment`` is the file and ``offset`` the byte offset."""

    def __init__(self, segment: str, offset: int, reason: str) -> None:
        self.segment = segment
        self.offset = offset
        self.reason = reason
        super().__init__(f"{segment}: corrupt journal at byte {offset}: {reason}")


class JournalOverrun(PipelineFailed):
    """A subscriber's position was removed by retention before it read it (it fell too far behind)."""

    def __init__(self, directory: str, position: int, oldest: int) -> None:
        self.directory = directory
        self.position = position
        self.oldest = oldest
        super().__init__(
            f"journal {directory}: reader at record {position} was overrun; "
            f"the oldest record still kept is {oldest}"
        )


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The fixed fields of a segment header."""

    index: int
    segment_bytes: int
    first_record: int
    created_ns: int
    max_payload: int
    flags: int
    spec_hash_raw: bytes = NO_SPEC_HASH
    sealed_records: int = 0

    @property
    def sealed(self) -> bool:
        return bool(self.flags & SEGMENT_FLAG_SEALED)

    @property
    def spec_hash(self) -> str | None:
        """``sha256:<hex>`` of the spec whose run wrote this segment, or None when none was recorded."""
        return None if self.spec_hash_raw == NO_SPEC_HASH else "sha256:" + self.spec_hash_raw.hex()


def segment_name(index: int) -> str:
    """The file name of segment ``index``: ``seg-00000000.journal``."""
    return f"seg-{index:08d}.journal"


def list_segments(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The segment files of a journal directory, oldest first (temporary files are ignored)."""
    base = Path(directory)
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            m = _SEGMENT_RE.fullmatch(entry.name)
            if m is not None:
                found.append((int(m.group(1)), base / entry.name))
    found.sort()
    return found


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _spec_hash_raw(spec_hash: str | bytes | None) -> bytes:
    if spec_hash is None or spec_hash == "":
        return NO_SPEC_HASH
    if isinstance(spec_hash, bytes):
        raw = spec_hash
    else:
        try:
            raw = bytes.fromhex(spec_hash.removeprefix("sha256:"))
        except ValueError:
            raw = b""
    if len(raw) != 32:
        raise UsageError(f"journal spec hash {spec_hash!r} is not sha256:<64 hex digits>")
    return raw


def _pack_header(index: int, segment_bytes: int, first_record: int, max_payload: int, spec_hash: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, HEADER_BYTES, index, segment_bytes, first_record, time.time_ns(),
                      max_payload, 0, spec_hash)
    crc = zlib.crc32(head) & 0xFFFFFFFF
    out = head + _U32.pack(crc) + _SEAL.pack(0, 0)
    out += _U32.pack(zlib.crc32(out[_OFF_FLAGS:_OFF_SEAL_CRC]) & 0xFFFFFFFF)
    return out + bytes(HEADER_BYTES - len(out))


def _parse_header(path: str, buf: Any, file_size: int, expect_index: int | None = None) -> SegmentHeader:
    if file_size < HEADER_BYTES:
        raise JournalCorrupt(path, 0, f"file is {file_size} bytes, shorter than the segment header")
    magic, version, header_bytes, index, segment_bytes, first, created, max_payload, _res, shash = \
        _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise JournalCorrupt(path, 0, f"bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version != VERSION:
        older = (" (written by an older byteor: move the directory away, that version still reads it, or use "
                 "another journal directory)") if version < VERSION else ""
        raise JournalCorrupt(path, 8, f"unsupported journal version {version} (this build reads {VERSION}){older}")
    (crc,) = _U32.unpack_from(buf, _OFF_CRC)
    if crc != zlib.crc32(bytes(buf[0:_OFF_CRC])) & 0xFFFFFFFF:
        raise JournalCorrupt(path, _OFF_CRC, "segment header checksum mismatch")
    if header_bytes != HEADER_BYTES:
        raise JournalCorrupt(path, 12, f"header_bytes {header_bytes} (expected {HEADER_BYTES})")
    if segment_bytes != file_size or segment_bytes % 8:
        raise JournalCorrupt(path, 24, f"segment_bytes {segment_bytes} != file size {file_size}")
    if expect_index is not None and index != expect_index:
        raise JournalCorrupt(path, 16, f"the header names segment {index}, but the file is segment {expect_index}")
    flags, count = _SEAL.unpack_from(buf, _OFF_FLAGS)
    if flags & SEGMENT_FLAG_SEALED:
        (seal_crc,) = _U32.unpack_from(buf, _OFF_SEAL_CRC)
        if seal_crc != zlib.crc32(bytes(buf[_OFF_FLAGS:_OFF_SEAL_CRC])) & 0xFFFFFFFF:
            raise JournalCorrupt(path, _OFF_SEAL_CRC, "seal checksum mismatch (segment flags or record count damaged)")
    if flags & ~SEGMENT_FLAG_SEALED:
        raise JournalCorrupt(path, _OFF_FLAGS, f"unknown segment flag bits 0x{flags:08x}")
    return SegmentHeader(index, segment_bytes, first, created, max_payload, flags, bytes(shash), count)


def _record_crc(buf: Any, at: int, length: int) -> int:
    crc = zlib.crc32(bytes(buf[at:at + 4]))
    return zlib.crc32(buf[at + RECORD_HEADER_BYTES: at + RECORD_HEADER_BYTES + length], crc) & 0xFFFFFFFF


# ============================================================================
# Segment access: the native hot path, or the same protocol in Python
# ============================================================================


class _Segment(Protocol):
    @property
    def offset(self) -> int: ...
    def append(self, data: Any, /) -> int: ...
    def reserve(self, n: int, /) -> int: ...
    def commit(self, at: int, /) -> None: ...
    def scan(self, at: int, /) -> tuple[int, int, int]: ...
    def release(self) -> None: ...


class _PySegment:
    """The journal.c protocol in Python (used when the native core lacks ``JournalSegment``).

    Ordering: the header word, the payload, the checksum and the flag are written by separate calls,
    in that order; on x86-64 (TSO) stores become visible in program order, which is what readers in
    other processes rely on. The native segment uses explicit release/acquire atomics and is preferred.
    """

    __slots__ = ("_buf", "_len", "_writable", "offset")

    def __init__(self, buffer: Any, offset: int = HEADER_BYTES) -> None:
        self._buf = memoryview(buffer)
        self._len = self._buf.nbytes
        self._writable = not self._buf.readonly
        self.offset = offset

    def append(self, data: Any, /) -> int:
        n = len(data) if isinstance(data, bytes | bytearray) else memoryview(data).nbytes
        at = self.reserve(n)
        if at >= 0:
            self._buf[at + RECORD_HEADER_BYTES : at + RECORD_HEADER_BYTES + n] = data
            self.commit(at)
        return at

    def reserve(self, n: int, /) -> int:
        at = self.offset
        need = RECORD_HEADER_BYTES + _pad8(n)
        if not self._writable:
            raise ValueError("journal segment is mapped read-only")
        if n < 0 or n > 0xFFFFFFFF or at + need > self._len:
            return -1
        _RECORD.pack_into(self._buf, at, n, 0)
        self._buf[at + 8 : at + RECORD_HEADER_BYTES] = _ZEROS[:8]
        pad = _pad8(n) - n
        if pad:
            start = at + RECORD_HEADER_BYTES + n
            self._buf[start : start + pad] = _ZEROS[:pad]
        self.offset = at + need
        return at

    def commit(self, at: int, /) -> None:
        (length,) = _U32.unpack_from(self._buf, at)
        _U32.pack_into(self._buf, at + _OFF_RECORD_CRC, _record_crc(self._buf, at, length))
        _U32.pack_into(self._buf, at + 4, FLAG_COMMITTED)

    def scan(self, at: int, /) -> tuple[int, int, int]:
        if at + RECORD_HEADER_BYTES > self._len:
            return (0, 0, at)
        length, flags = _RECORD.unpack_from(self._buf, at)
        if flags & ~FLAG_COMMITTED:
            return (-1, length, at)
        if not flags & FLAG_COMMITTED:
            return (0, length, at)
        nxt = at + RECORD_HEADER_BYTES + _pad8(length)
        if nxt > self._len:
            return (-1, length, at)
        if _U32.unpack_from(self._buf, at + _OFF_RECORD_CRC)[0] != _record_crc(self._buf, at, length):
            return (-1, length, at)
        return (1, length, nxt)

    def release(self) -> None:
        self._buf.release()


_NATIVE_SEGMENT = _native.JournalSegment
if (_native.JOURNAL_HEADER_BYTES, getattr(_native, "JOURNAL_RECORD_HEADER_BYTES", 8)) != (HEADER_BYTES,
                                                                                       RECORD_HEADER_BYTES):
    # a stale extension next to newer Python code would write records this reader cannot read
    raise ImportError(f"byteor._native was built for another journal format (header {_native.JOURNAL_HEADER_BYTES} "
                      f"bytes, this code writes format {VERSION} with {HEADER_BYTES}); rebuild it: pip install -e .")


def native_available() -> bool:
    """Whether ``byteor._native`` carries the C journal hot path (else the Python protocol is used)."""
    return _NATIVE_SEGMENT is not None


def _segment(buffer: Any, offset: int, impl: str) -> _Segment:
    if impl == "python" or (impl == "auto" and _NATIVE_SEGMENT is None):
        return _PySegment(buffer, offset)
    if _NATIVE_SEGMENT is None:
        raise UsageError("journal impl='native' asked for, but byteor._native has no JournalSegment")
    seg: _Segment = _NATIVE_SEGMENT(buffer, offset)
    return seg


class _Mapped:
    """One segment file mapped in memory, with its header and a segment accessor.

    ``expect_index`` is the index the file name gives: a header naming another index is corruption.
    A writable mapping has its blocks allocated first, so a write can never fault on a full disk.
    """

    __slots__ = ("fd", "header", "mm", "path", "seg")

    def __init__(self, path: Path, *, writable: bool, impl: str, expect_index: int | None = None) -> None:
        self.path = path
        flags = os.O_RDWR if writable else os.O_RDONLY
        self.fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            size = os.fstat(self.fd).st_size
            if size < HEADER_BYTES:
                raise JournalCorrupt(str(path), 0, f"file is {size} bytes, shorter than the header")
            if writable:
                _allocate(self.fd, size, path)
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            self.mm = mmap.mmap(self.fd, size, access=access)
        except BaseException:
            os.close(self.fd)
            raise
        try:
            self.header = _parse_header(str(path), self.mm, size, expect_index)
            self.seg = _segment(self.mm, HEADER_BYTES, impl)
        except BaseException:
            self.mm.close()
            os.close(self.fd)
            raise

    def seal(self, records: int) -> None:
        """Record the segment's record count and set SEALED, the flag last (see the module docs)."""
        flags = self.header.flags | SEGMENT_FLAG_SEALED
        seal = _SEAL.pack(flags, records)
        _SEAL.pack_into(self.mm, _OFF_FLAGS, self.header.flags, records)
        _U32.pack_into(self.mm, _OFF_SEAL_CRC, zlib.crc32(seal) & 0xFFFFFFFF)
        _U32.pack_into(self.mm, _OFF_FLAGS, flags)

    def sync(self, start: int = 0, end: int | None = None) -> None:
        lo = start - start % _PAGE
        hi = len(self.mm) if end is None else min(len(self.mm), end)
        if hi > lo:
            self.mm.flush(lo, hi - lo)

    def close(self) -> None:
        self.seg.release()
        self.mm.close()
        os.close(self.fd)


def _allocate(fd: int, size: int, path: Path) -> None:
    """Reserve every block of a segment now: a full disk is an error here, never a SIGBUS later."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PipelineFailed(
                f"journal {path.parent}: no space left for segment {path.name} ({size} bytes): "
                f"{exc.strerror}; free space on that filesystem or lower segment_bytes"
            ) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan_error(mapped: _Mapped, at: int, length: int) -> JournalCorrupt:
    raw = _RECORD.unpack_from(mapped.mm, at)[1]
    if raw & ~FLAG_COMMITTED:
        why = f"unknown record flag bits 0x{raw:08x}"
    elif at + RECORD_HEADER_BYTES + _pad8(length) > mapped.header.segment_bytes:
        why = f"record length {length} runs past the segment end ({mapped.header.segment_bytes} bytes)"
    else:
        why = f"record checksum mismatch (length {length}): the record is damaged"
    return JournalCorrupt(str(mapped.path), at, why)


def _zero_after(mapped: _Mapped, at: int) -> int | None:
    """The offset of the first non-zero byte from ``at`` to the segment end, or None."""
    mm = mapped.mm
    size = len(mm)
    step = 1 << 16
    pos = at
    while pos < size:
        chunk = mm[pos:min(size, pos + step)]
        if chunk.count(0) != len(chunk):
            return pos + next(i for i, b in enumerate(chunk) if b)
        pos += step
    return None


# ============================================================================
# Writer
# ============================================================================


class JournalWriter:
    """The single writer of a journal directory (created if missing).

    ``segment_bytes`` is the size of each segment file; ``slot_bytes`` the largest payload accepted
    (a larger one raises :class:`~byteor.UsageError`); ``fsync`` the durability posture (module
    docstring). ``max_segments`` keeps at most that many segment files (oldest removed at rollover).
    ``spec_hash`` (``sha256:<hex>``) is recorded in every segment this writer creates; an existing
    tail segment that records another spec is sealed and a new segment started, so one segment
    always belongs to one spec version. Raises :class:`~byteor.PipelineFailed` when another live
    writer holds the directory or the disk is full, :class:`~byteor.UnsafePathError` when the
    directory is not private, and :class:`JournalCorrupt` when the existing tail breaks the format.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        slot_bytes: int = DEFAULT_SLOT_BYTES,
        fsync: str = "none",
        max_segments: int | None = None,
        impl: str = "auto",
        spec_hash: str | bytes | None = None,
    ) -> None:
        if fsync not in FSYNC_POSTURES:
            raise UsageError(f"journal fsync posture {fsync!r} is not one of {', '.join(FSYNC_POSTURES)}")
        if impl not in ("auto", "native", "python"):
            raise UsageError(f"journal impl {impl!r} is not one of auto, native, python")
        if slot_bytes < 1 or slot_bytes > 0xFFFFFFFF:
            raise UsageError(f"journal slot_bytes {slot_bytes} must be between 1 and 2**32-1")
        if segment_bytes % 8 or segment_bytes < HEADER_BYTES + RECORD_HEADER_BYTES + _pad8(slot_bytes):
            raise UsageError(
                f"journal segment_bytes {segment_bytes} must be a multiple of 8 and hold one record of "
                f"slot_bytes={slot_bytes} ({HEADER_BYTES + RECORD_HEADER_BYTES + _pad8(slot_bytes)} bytes)"
            )
        if max_segments is not None and max_segments < 1:
            raise UsageError("journal max_segments must be >= 1")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.slot_bytes = slot_bytes
        self.fsync = fsync
        self.max_segments = max_segments
        self._impl = impl
        self._always = fsync == "always"
        self._spec_hash = _spec_hash_raw(spec_hash)
        self._reserved: tuple[int, int, memoryview, memoryview] | None = None
        ensure_private_dir(self.directory)
        self._lock_fd = open_existing_private(self.directory / "writer.lock", os.O_RDWR)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise PipelineFailed(f"journal {self.directory} already has a live writer") from None
        try:
            self._current, self._next = self._open_tail()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._seg: _Segment = self._current.seg
        self.closed = False

    # -- public -----------------------------------------------------------------------------------

    @property
    def next_index(self) -> int:
        """The index the next appended record gets (= the number of records ever committed)."""
        return self._next

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Append one record (committed before this returns); returns its index."""
        if len(data) > self.slot_bytes:
            self._check_size(len(data))
        at = self._seg.append(data)
        if at < 0:
            at = self._append_slow(data)
        if self._always:
            self._current.sync(at, at + RECORD_HEADER_BYTES + len(data))
        index = self._next
        self._next = index + 1
        return index

    def reserve(self, n: int) -> memoryview:
        """Phase one of a zero-copy append: reserve ``n`` bytes and return a writable view of them.

        Fill the view, then call :meth:`commit`. Until then no reader sees the record; a crash in
        between leaves it uncommitted, and the next writer zeroes it. The view is released by commit.
        """
        if self._reserved is not None:
            raise UsageError("journal reserve: the previous reservation is not committed yet")
        self._check_size(n)
        at = self._seg.reserve(n)
        if at < 0:
            self._rollover()
            at = self._seg.reserve(n)
        whole = memoryview(self._current.mm)
        view = whole[at + RECORD_HEADER_BYTES : at + RECORD_HEADER_BYTES + n]
        self._reserved = (at, n, whole, view)
        return view

    def commit(self) -> int:
        """Phase two: publish the reserved record; returns its index."""
        if self._reserved is None:
            raise UsageError("journal commit without a reservation")
        at, n, whole, view = self._reserved
        view.release()
        whole.release()
        self._reserved = None
        self._seg.commit(at)
        if self._always:
            self._current.sync(at, at + RECORD_HEADER_BYTES + n)
        index = self._next
        self._next = index + 1
        return index

    def native_segment(self) -> Any:
        """The current segment for a native append loop (``byteor._native.run_role``), or None when
        appends must stay here (the Python segment, ``fsync=always``, a pending reservation, closed).
        The loop appends through it and reports with :meth:`native_rolled` and
        :meth:`native_appended`; meanwhile nothing else may append."""
        if self._always or self._reserved is not None or self.closed:
            return None
        if not isinstance(self._seg, _native.JournalSegment):
            return None
        return self._seg

    def native_appended(self, count: int) -> None:
        """``count`` records were appended and committed through :meth:`native_segment`."""
        self._next += count

    def native_rolled(self, count: int) -> Any:
        """The native loop appended ``count`` records and found the segment full: roll over and
        return the new segment."""
        self.native_appended(count)
        self._rollover()
        return self._seg

    def flush(self) -> None:
        """Force what is written to disk under ``segment``/``always`` (``none``: nothing to do)."""
        if self.fsync != "none" and not self.closed:
            self._current.sync()

    def close(self) -> None:
        """Flush (per posture), unmap and release the writer lock. Idempotent."""
        if self.closed:
            return
        if self._reserved is not None:
            _, _, whole, view = self._reserved
            view.release()
            whole.release()
            self._reserved = None
        self.flush()
        self._current.close()
        os.close(self._lock_fd)
        self.closed = True

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    def _check_size(self, n: int) -> None:
        if n > self.slot_bytes:
            raise UsageError(
                f"journal {self.directory}: record of {n} bytes exceeds slot_bytes={self.slot_bytes}"
            )

    def _append_slow(self, data: bytes | bytearray | memoryview) -> int:
        self._check_size(len(data))
        self._rollover()
        at = self._seg.append(data)
        if at < 0:  # pragma: no cover - a fresh segment always holds one record (checked in __init__)
            raise PipelineFailed(f"journal {self.directory}: record does not fit an empty segment")
        return at

    def _create_segment(self, index: int, first_record: int) -> _Mapped:
        final = self.directory / segment_name(index)
        tmp = self.directory / f".{segment_name(index)}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = open_new(tmp, os.O_RDWR)
        try:
            _allocate(fd, self.segment_bytes, final)
            os.pwrite(fd, _pack_header(index, self.segment_bytes, first_record, self.slot_bytes, self._spec_hash), 0)
            if self.fsync != "none":
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(fd)
        if final.exists() or final.is_symlink():
            tmp.unlink()
            raise PipelineFailed(f"journal {self.directory}: {final.name} already exists")
        os.rename(tmp, final)  # readers see a segment only with its complete header
        if self.fsync != "none":
            _fsync_dir(self.directory)
        return _Mapped(final, writable=True, impl=self._impl, expect_index=index)

    def _open_tail(self) -> tuple[_Mapped, int]:
        segments = list_segments(self.directory)
        if not segments:
            return self._create_segment(0, 0), 0
        index, path = segments[-1]
        mapped = _Mapped(path, writable=True, impl=self._impl, expect_index=index)
        try:
            count, end = _count_committed(mapped)
            fits = end + RECORD_HEADER_BYTES <= len(mapped.mm)
            status, length, _ = mapped.seg.scan(end) if fits else (0, 0, end)
            if status < 0:  # pragma: no cover - _count_committed raised already
                raise _scan_error(mapped, end, length)
            if length:  # a reservation that was never committed: zero it so the next record starts clean
                stop = min(len(mapped.mm), end + RECORD_HEADER_BYTES + _pad8(length))
                # Nothing is ever written after an uncommitted reservation (one writer appends in
                # order): bytes after it mean a committed record lost its flag, not a crash.
                if stop + RECORD_HEADER_BYTES <= len(mapped.mm) and \
                        bytes(mapped.mm[stop:stop + RECORD_HEADER_BYTES]) != _ZEROS:
                    raise JournalCorrupt(str(path), end, f"record {mapped.header.first_record + count} is not "
                                         "committed but later records follow it")
                mapped.mm[end:stop] = bytes(stop - end)
            nxt = mapped.header.first_record + count
            if mapped.header.sealed and mapped.header.sealed_records != count:
                raise JournalCorrupt(str(path), end, f"segment sealed with {mapped.header.sealed_records} records "
                                     f"holds {count} readable ones")
            mapped.seg.release()
            mapped.seg = _segment(mapped.mm, end, self._impl)
        except BaseException:
            mapped.close()
            raise
        if mapped.header.sealed:  # the next segment was removed: start a new one after it
            mapped.close()
            return self._create_segment(index + 1, nxt), nxt
        if mapped.header.spec_hash_raw != self._spec_hash:  # another spec version wrote it: its own segment
            mapped.seal(count)
            mapped.close()
            return self._create_segment(index + 1, nxt), nxt
        return mapped, nxt

    def _rollover(self) -> None:
        old = self._current
        nxt = self._create_segment(old.header.index + 1, self._next)
        old.seal(self._next - old.header.first_record)
        if self.fsync != "none":
            old.sync()
        old.close()
        self._current = nxt
        self._seg = nxt.seg
        if self.max_segments is not None:
            segments = list_segments(self.directory)
            for _, path in segments[: max(0, len(segments) - self.max_segments)]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _count_committed(mapped: _Mapped) -> tuple[int, int]:
    """(committed records, offset after the last one) of one segment; raises on a corrupt header."""
    seg = mapped.seg
    at = HEADER_BYTES
    count = 0
    size = len(mapped.mm)
    while at + RECORD_HEADER_BYTES <= size:
        status, length, nxt = seg.scan(at)
        if status < 0:
            raise _scan_error(mapped, at, length)
        if status == 0:
            break
        if length > mapped.header.max_payload:
            raise JournalCorrupt(
                str(mapped.path), at,
                f"record length {length} exceeds the segment's max {mapped.header.max_payload}",
            )
        count += 1
        at = nxt
    return count, at


# ============================================================================
# Readers
# ============================================================================


class JournalSubscription:
    """A subscriber's own position in a journal; ``poll`` returns what was committed since.

    ``position`` is the index of the next record this subscriber returns. Never blocks. Raises
    :class:`JournalOverrun` when retention removed records before this subscriber read them, and
    :class:`JournalCorrupt` (file, offset) on a format violation.
    """

    def __init__(self, directory: Path, start: int = 0) -> None:
        self.directory = directory
        self.position = start
        self._mapped: _Mapped | None = None
        self._offset = HEADER_BYTES
        self._index = 0  # index of the record at _offset

    def _locate(self) -> bool:
        segments = list_segments(self.directory)
        if not segments:
            return False
        oldest = 0
        for index, path in reversed(segments):
            try:
                mapped = _Mapped(path, writable=False, impl="auto", expect_index=index)
            except FileNotFoundError:  # removed by retention while we looked
                continue
            if mapped.header.first_record <= self.position:
                self._mapped = mapped
                self._offset = HEADER_BYTES
                self._index = mapped.header.first_record
                return True
            oldest = mapped.header.first_record
            mapped.close()
        raise JournalOverrun(str(self.directory), self.position, oldest)

    def _advance(self) -> bool:
        """Move to the next segment if the writer has created it; detects removed segments."""
        cur = self._mapped
        assert cur is not None
        later = [(i, p) for i, p in list_segments(self.directory) if i > cur.header.index]
        if not later:
            if cur.seg.scan(self._offset)[0] == 0:
                _check_sealed_count(cur, self._index, self._offset)
            return False
        # The writer creates segment N+1 only after committing everything in N: look once more.
        if cur.seg.scan(self._offset)[0] == 1:
            return True
        nxt_index, nxt_path = later[0]
        if nxt_index != cur.header.index + 1:
            raise JournalOverrun(str(self.directory), self.position, _first_record(nxt_path))
        try:
            mapped = _Mapped(nxt_path, writable=False, impl="auto", expect_index=nxt_index)
        except FileNotFoundError:
            raise JournalOverrun(str(self.directory), self.position, self._oldest()) from None
        first = mapped.header.first_record
        if first != self._index:
            mapped.close()
            if first > self._index:
                why = (f"record {self._index} is not committed, but the next segment ({nxt_path.name}) starts at "
                       f"record {first}: records {self._index}..{first - 1} are missing")
            else:
                why = f"the next segment ({nxt_path.name}) starts at record {first}, inside this one (at {self._index})"
            raise JournalCorrupt(str(cur.path), self._offset, why)
        _check_sealed_count(cur, self._index, self._offset)
        cur.close()
        self._mapped = mapped
        self._offset = HEADER_BYTES
        self._index = first
        return True

    def _oldest(self) -> int:
        segments = list_segments(self.directory)
        return _first_record(segments[0][1]) if segments else self.position

    def poll(self, max_records: int = 1024) -> list[bytes]:
        """Up to ``max_records`` committed records from this subscriber's position (copies)."""
        if self._mapped is None and not self._locate():
            return []
        out: list[bytes] = []
        mapped = self._mapped
        assert mapped is not None
        while len(out) < max_records:
            status, length, nxt = mapped.seg.scan(self._offset)
            if status == 1:
                if length > mapped.header.max_payload:
                    raise JournalCorrupt(
                        str(mapped.path), self._offset,
                        f"record length {length} exceeds the segment's max {mapped.header.max_payload}",
                    )
                if self._index >= self.position:
                    start = self._offset + RECORD_HEADER_BYTES
                    out.append(mapped.mm[start : start + length])
                    self.position += 1
                self._offset = nxt
                self._index += 1
                continue
            if status < 0:
                if out:  # hand over what was read; the error is raised again by the next poll
                    break
                raise _scan_error(mapped, self._offset, length)
            lost = _committed_after(mapped, self._offset, length)
            if lost is not None:
                if out:
                    break
                raise JournalCorrupt(str(mapped.path), self._offset, f"record {self._index} is not committed, but "
                                     f"the record after it (at byte {lost}) is: a committed record lost its flag")
            try:
                moved = self._advance()
            except JournalOverrun:
                if out:
                    break
                raise
            if not moved:
                break
            mapped = self._mapped
            assert mapped is not None
        return out

    def close(self) -> None:
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None


def _committed_after(mapped: _Mapped, at: int, length: int) -> int | None:
    """Where a committed record follows the uncommitted one at ``at`` (corruption: the one writer
    commits in order, and a commit's release store publishes every earlier commit), else None."""
    nxt = at + RECORD_HEADER_BYTES + _pad8(length)
    if nxt + RECORD_HEADER_BYTES > len(mapped.mm) or length > mapped.header.max_payload:
        return None
    if mapped.seg.scan(nxt)[0] != 1:
        return None
    if mapped.seg.scan(at)[0] == 1:  # committed meanwhile: a live writer, not damage
        return None
    return nxt


def _check_sealed_count(mapped: _Mapped, index: int, offset: int) -> None:
    """A sealed segment must hold exactly the records it was sealed with (read live: the writer seals
    after a reader may have mapped it)."""
    flags, count = _SEAL.unpack_from(mapped.mm, _OFF_FLAGS)
    if not flags & SEGMENT_FLAG_SEALED:
        return
    (seal_crc,) = _U32.unpack_from(mapped.mm, _OFF_SEAL_CRC)
    if seal_crc != zlib.crc32(bytes(mapped.mm[_OFF_FLAGS:_OFF_SEAL_CRC])) & 0xFFFFFFFF:
        raise JournalCorrupt(str(mapped.path), _OFF_SEAL_CRC, "seal checksum mismatch (segment flags or record "
                             "count damaged)")
    readable = index - mapped.header.first_record
    if readable != count:
        raise JournalCorrupt(str(mapped.path), offset, f"segment sealed with {count} records holds {readable} "
                             f"readable ones (record {index} is not committed)")


def _first_record(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
    except FileNotFoundError:
        return 0
    if len(head) < HEADER_BYTES:
        raise JournalCorrupt(str(path), 0, "file shorter than the segment header")
    return int(_HEAD.unpack_from(head, 0)[5])


def _successor_first(segments: list[tuple[int, Path]], i: int) -> int | None:
    return _first_record(segments[i + 1][1]) if i + 1 < len(segments) else None


class JournalReader:
    """Read a journal directory (while a writer appends, or after). Raises :class:`~byteor.UsageError`
    if the directory does not exist."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise UsageError(f"journal directory {self.directory} does not exist")

    def segments(self) -> list[SegmentHeader]:
        """Headers of the segment files present, oldest first."""
        out = []
        for index, path in list_segments(self.directory):
            mapped = _Mapped(path, writable=False, impl="auto", expect_index=index)
            out.append(mapped.header)
            mapped.close()
        return out

    def check_spec_hash(self, expected: str, start: int = 0) -> None:
        """Refuse (:class:`~byteor.ArtifactError`) when a segment holding records from ``start`` on
        records another spec hash than ``expected`` (``sha256:<hex>``), or none: such records cannot
        be shown to come from that spec version."""
        want = _spec_hash_raw(expected)
        segments = list_segments(self.directory)
        for i, (index, path) in enumerate(segments):
            mapped = _Mapped(path, writable=False, impl="auto", expect_index=index)
            try:
                header = mapped.header
                end = _successor_first(segments, i)
                if end is None:
                    end = header.first_record + _count_committed(mapped)[0]
            finally:
                mapped.close()
            if end <= max(start, header.first_record):
                continue  # holds no record at or after `start`
            if header.spec_hash_raw != want:
                found = header.spec_hash or "no spec hash"
                raise ArtifactError(f"{path}: journal segment {index} was written by spec {found}, not by "
                                    f"{expected}; its records cannot be replayed as that spec's")

    def subscribe(self, start: int = 0) -> JournalSubscription:
        """A subscriber starting at record index ``start``."""
        return JournalSubscription(self.directory, start)

    def records(self, start: int = 0) -> Iterator[bytes]:
        """Every committed record from index ``start`` to the current end, in order."""
        sub = self.subscribe(start)
        try:
            while batch := sub.poll(4096):
                yield from batch
        finally:
            sub.close()

    def positions(self) -> tuple[int, int]:
        """(oldest index still kept, index after the last committed record)."""
        segments = list_segments(self.directory)
        if not segments:
            return (0, 0)
        oldest = _first_record(segments[0][1])
        mapped = _Mapped(segments[-1][1], writable=False, impl="auto", expect_index=segments[-1][0])
        try:
            count, _ = _count_committed(mapped)
            return (oldest, mapped.header.first_record + count)
        finally:
            mapped.close()

    def last_n(self, n: int) -> list[bytes]:
        """The last ``n`` committed records (fewer if the journal holds fewer), oldest first."""
        if n <= 0:
            return []
        oldest, end = self.positions()
        return list(self.records(max(oldest, end - n)))

    def verify(self) -> int:
        """Check every byte of every segment; return the record count or raise :class:`JournalCorrupt`.

        Checked: each header (magic, version, checksum, size, the index its file name gives), that
        indexes increase by one and each segment's first record follows the previous segment's last,
        every record's checksum, that a sealed segment holds the records it was sealed with, and that
        nothing but zeros follows the last committed record (an uncommitted reservation is allowed
        only at the tail of the last segment, where a writer may be appending).
        """
        segments = list_segments(self.directory)
        total = 0
        expected_first: int | None = None
        previous: int | None = None
        for i, (index, path) in enumerate(segments):
            mapped = _Mapped(path, writable=False, impl="auto", expect_index=index)
            try:
                header = mapped.header
                if previous is not None and index != previous + 1:
                    raise JournalCorrupt(str(path), 16, f"segment {previous + 1} is missing before segment {index}")
                if expected_first is not None and header.first_record != expected_first:
                    raise JournalCorrupt(str(path), 32, f"first record is {header.first_record}, but the previous "
                                         f"segment ends at record {expected_first}")
                count, end = _count_committed(mapped)
                tail = end
                if end + RECORD_HEADER_BYTES <= len(mapped.mm):
                    _status, length, _ = mapped.seg.scan(end)
                    if length or bytes(mapped.mm[end:end + RECORD_HEADER_BYTES]) != _ZEROS:
                        if i != len(segments) - 1:
                            raise JournalCorrupt(str(path), end, f"record {header.first_record + count} is not "
                                                 "committed, in a segment that is not the last")
                        tail = end + RECORD_HEADER_BYTES + _pad8(length)
                stray = _zero_after(mapped, tail)
                if stray is not None:
                    last = header.first_record + count - 1
                    raise JournalCorrupt(str(path), stray, f"data after the last readable record ({last}): a record "
                                         "lost its COMMITTED flag or was damaged")
                if header.sealed and header.sealed_records != count:
                    raise JournalCorrupt(str(path), end, f"segment sealed with {header.sealed_records} records "
                                         f"holds {count} readable ones")
            finally:
                mapped.close()
            total += count
            expected_first = header.first_record + count
            previous = index
        return total
