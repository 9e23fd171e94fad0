"""Ring file lifecycle: create, attach, unlink, stale-file detection.

byteor owns the lifecycle of its shared-memory files itself. ``multiprocessing.shared_memory`` is
never used: its resource tracker unlinks a segment when the process that created it exits, while
other processes still use it.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Sequence

from .. import _native
from .._errors import ShmError
from .._fileio import ensure_private_dir

__all__ = [
    "DEFAULT_DIR",
    "attach_ring",
    "create_ring",
    "hash_bytes",
    "pid_alive",
    "private_ring_dir",
    "ring_files_under",
    "stale_files",
    "unlink",
]

#: Where ring files live unless a path says otherwise (a tmpfs: pages never touch a disk).
DEFAULT_DIR = "/dev/shm/byteor"


def hash_bytes(spec_hash: bytes | str) -> bytes:
    """The 32 raw bytes of a spec hash given raw or as ``sha256:<hex>`` / ``<hex>``."""
    if isinstance(spec_hash, bytes):
        if len(spec_hash) != 32:
            raise ShmError(f"spec hash must be 32 raw bytes, got {len(spec_hash)}")
        return spec_hash
    text = spec_hash.removeprefix("sha256:")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ShmError(f"spec hash {spec_hash!r} is not sha256:<64 hex digits>")
    return raw


def create_ring(path: str | os.PathLike[str], capacity: int, slot_bytes: int, deps: Sequence[int],
                spec_hash: bytes | str, *, multi_producer: bool = False) -> _native.Ring:
    """Create (``O_EXCL``, mode 0600) and map a new ring file in a private directory.

    The parent directory is made or checked by :func:`byteor._fileio.ensure_private_dir` (0700, owned
    by this user, not writable by others; below :data:`DEFAULT_DIR` every component must be ours).
    Raises :class:`~byteor.ShmError` naming the path when the file exists, the directory cannot be
    created, ``/dev/shm`` has no room, or the geometry is invalid, and
    :class:`~byteor.UnsafePathError` when the directory belongs to someone else.
    """
    p = os.fspath(path)
    raw = hash_bytes(spec_hash)
    parent = os.path.dirname(os.path.abspath(p))
    try:
        private_ring_dir(parent)
    except OSError as exc:
        raise ShmError(f"{p}: cannot create directory {parent}: {exc.strerror}") from None
    try:
        return _native.Ring.create(p, capacity, slot_bytes, list(deps), raw, multi_producer=multi_producer)
    except FileExistsError:
        raise ShmError(f"{p}: ring file already exists (in use, or stale: see `byteor doctor`)") from None
    except OSError as exc:
        why = "no space left (enlarge /dev/shm)" if exc.errno == errno.ENOSPC else exc.strerror
        raise ShmError(f"{p}: cannot create ring file: {why}") from None
    except ValueError as exc:
        raise ShmError(f"{p}: {exc}") from None


def private_ring_dir(directory: str | os.PathLike[str]) -> str:
    """Create or check a ring / lane directory (the helper executors call before creating files in
    it): :func:`~byteor._fileio.ensure_private_dir`, with every component from :data:`DEFAULT_DIR`
    down owned by this user when the directory lies below it. Returns the absolute path."""
    d = os.path.abspath(os.fspath(directory))
    below_default = d == DEFAULT_DIR or d.startswith(DEFAULT_DIR + "/")
    return ensure_private_dir(d, own_from=DEFAULT_DIR if below_default else None)


def attach_ring(path: str | os.PathLike[str], *, expect_hash: bytes | str | None = None) -> _native.Ring:
    """Map an existing ring file after checking magic, layout version, sizes and (when given) the hash.

    Raises :class:`~byteor.ShmError` with the path and the reason (missing, foreign, truncated,
    other layout version, spec hash mismatch).
    """
    p = os.fspath(path)
    raw = None if expect_hash is None else hash_bytes(expect_hash)
    try:
        return _native.Ring.attach(p, expect_hash=raw)
    except _native.AttachError as exc:
        raise ShmError(str(exc)) from None


def unlink(path: str | os.PathLike[str]) -> bool:
    """Remove a ring file; returns False when it was already gone. Mapped views stay valid."""
    try:
        os.unlink(os.fspath(path))
    except FileNotFoundError:
        return False
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid is alive (another user's process counts as alive).

    A zombie (exited, not yet reaped) is dead: after a crash, orphaned stage processes can stay
    zombies for good where PID 1 does not reap, and counting them alive would hide stale rings.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def ring_files_under(directory: str | os.PathLike[str]) -> list[str]:
    """Every regular file under ``directory`` (recursively), sorted; a missing directory has none."""
    out: list[str] = []
    for root, _dirs, files in os.walk(os.fspath(directory)):
        out.extend(os.path.join(root, f) for f in files)
    return sorted(out)


#: Every ring layout so far keeps the header block's creator pid at byte 124 and the participants
#: table (16 entries of 32 bytes: u32 state, u32 role, u32 pid, ...) at byte 192.
_CREATOR_PID_AT = 124
_PARTICIPANTS_AT = 192
_PARTICIPANTS_END = _PARTICIPANTS_AT + 32 * 16


def _older_ring_owners(path: str) -> tuple[int, list[int]] | None:
    """The creator pid and running participants' pids of a ring file of an earlier layout version
    (which this build does not attach), read from its header; None when the file is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, _PARTICIPANTS_END, 0)
    finally:
        os.close(fd)
    if len(head) < _PARTICIPANTS_END or head[:8] != b"BYTEORRG":
        return None
    if not 1 <= struct.unpack_from("<I", head, 8)[0] < _native.LAYOUT_VERSION:
        return None
    entries = (struct.unpack_from("<III", head, _PARTICIPANTS_AT + 32 * i) for i in range(16))
    running = [pid for state, _role, pid in entries if state == _native.PARTICIPANT_RUNNING]
    return struct.unpack_from("<I", head, _CREATOR_PID_AT)[0], running


def _is_stale(path: str) -> bool:
    try:
        ring = _native.Ring.attach(path)
    except (_native.AttachError, OSError):
        # a ring of an earlier layout (left by an older byteor) is judged by its header; anything
        # else (lane journals, error files, foreign files) is never ours to remove
        owners = _older_ring_owners(path)
        if owners is None:
            return False
        creator, running = owners
    else:
        try:
            snap = ring.snapshot()
        finally:
            ring.close()
        creator = int(snap["creator_pid"])
        running = [pid for (_slot, _role, pid, _hb, state) in snap["participants"]
                   if state == _native.PARTICIPANT_RUNNING]
    if any(pid_alive(pid) for pid in running):
        return False
    return not pid_alive(creator)


def stale_files(directory: str | os.PathLike[str] = DEFAULT_DIR) -> list[str]:
    """Ring files under ``directory`` that nobody uses any more, for ``doctor`` and executors.

    A file is stale when it is a valid byteor ring, its creator process is gone and every
    participant registered as running has a dead pid. A ring of an earlier layout version (which
    this build refuses to attach) is judged the same way from its header. Files that are not rings
    are never listed.
    """
    return [p for p in ring_files_under(directory) if _is_stale(p)]
