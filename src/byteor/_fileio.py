"""How byteor creates, replaces, reads and copies files: privately, without following links.

Every file and directory byteor writes goes through this module, so the rules hold everywhere:

* **Private by default.** Directories are created ``0700`` and files ``0600``. An operator who wants
  a group to read them sets ``BYTEOR_GROUP_READABLE=1`` (directories ``0750``, files ``0640``);
  nothing byteor writes is ever group- or world-writable.
* **Directories are checked, not trusted.** :func:`ensure_private_dir` creates missing components
  and refuses (:class:`~byteor.UnsafePathError`) an existing directory that is a symlink, is not
  owned by the current user, or is writable by its group or others; every existing ancestor must be
  owned by root or the current user and, when others may write it, carry the sticky bit (``/tmp``,
  ``/dev/shm``), so nobody else can rename or replace what byteor creates below it.
* **No links are followed** when creating: :func:`open_new` uses ``O_NOFOLLOW | O_EXCL`` and
  :func:`open_existing_private` ``O_NOFOLLOW`` plus an owner and link-count check, so a symlink or
  hard link planted where byteor writes never redirects the write.
* **Readers refuse what is not a regular file** (:func:`read_regular_file`): a FIFO or a device
  given as a spec or key file is an error, never a read that blocks forever.
* **Copies of evidence** (:func:`copy_tree_nofollow`, used by ``incident-bundle``) walk directories
  by file descriptor, copy only regular files with one link owned by the directory's owner, and
  report everything else instead of following it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from ._errors import UnsafePathError

__all__ = [
    "GROUP_READABLE_ENV",
    "CopyReport",
    "NotRegularFileError",
    "copy_file_nofollow",
    "copy_tree_nofollow",
    "dir_mode",
    "ensure_private_dir",
    "file_mode",
    "make_dirs",
    "open_existing_private",
    "open_new",
    "read_regular_file",
    "write_bytes_atomic",
    "write_bytes_exclusive",
    "write_text_atomic",
]

#: ``1`` makes byteor's directories 0750 and files 0640 instead of 0700 / 0600.
GROUP_READABLE_ENV = "BYTEOR_GROUP_READABLE"
_COPY_CHUNK = 1 << 20


def _group_readable() -> bool:
    return os.environ.get(GROUP_READABLE_ENV, "") == "1"


def dir_mode() -> int:
    """The mode byteor creates directories with: 0700, or 0750 with ``BYTEOR_GROUP_READABLE=1``."""
    return 0o750 if _group_readable() else 0o700


def file_mode() -> int:
    """The mode byteor creates files with: 0600, or 0640 with ``BYTEOR_GROUP_READABLE=1``."""
    return 0o640 if _group_readable() else 0o600


class NotRegularFileError(OSError):
    """A path that had to be a regular file is a FIFO, a device, a socket or a directory."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(0, f"not a regular file ({kind})", path)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def _owner_ok(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _check_ancestor(path: str, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
    if not _owner_ok(st.st_uid):
        raise UnsafePathError(f"{path}: owned by uid {st.st_uid}, neither root nor this user (uid "
                              f"{os.geteuid()}); another user could replace what byteor creates below it")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafePathError(f"{path}: writable by its group or others without the sticky bit; another user "
                              "could replace what byteor creates below it")


def _check_own_dir(path: str, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{path}: is a symlink; byteor uses only real directories it owns")
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
    if st.st_uid != os.geteuid():
        raise UnsafePathError(f"{path}: owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}); "
                              "refusing to use a directory someone else created (remove it or choose another path)")
    if st.st_mode & 0o022:
        raise UnsafePathError(f"{path}: writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                              "refusing to use it (chmod go-w, or choose another path)")


def ensure_private_dir(path: str | os.PathLike[str], *, own_from: str | os.PathLike[str] | None = None) -> str:
    """Create ``path`` (and missing parents) with :func:`dir_mode`, or check the existing one: for a
    directory byteor keeps its own files in (ring and lane directories, journals, dead letters).

    The directory itself, and every component this call creates, must be a real directory owned by
    the current user and not writable by group or others; an existing one whose mode grants more
    than :func:`dir_mode` is narrowed to it. Existing ancestors must pass the ancestor rule (module
    docstring). ``own_from`` names an ancestor from which every component must be owned by the
    current user (e.g. ``/dev/shm/byteor`` for a ring directory below it). Returns the absolute path;
    raises :class:`~byteor.UnsafePathError` or ``OSError`` (cannot create).
    """
    return _walk_dirs(path, own_from=own_from, own_leaf=True)


def make_dirs(path: str | os.PathLike[str]) -> str:
    """Create the missing directories of ``path`` with :func:`dir_mode`: for where an operator asks
    byteor to put an artifact (``--out``, ``--report``). Components this call creates are private;
    existing ones, the last included, must only pass the ancestor rule (owned by root or this user,
    not writable by others unless sticky), so ``/tmp`` or a team's directory stays usable."""
    return _walk_dirs(path, own_from=None, own_leaf=False)


def _walk_dirs(path: str | os.PathLike[str], *, own_from: str | os.PathLike[str] | None, own_leaf: bool) -> str:
    target = os.path.abspath(os.fspath(path))
    own_root = os.path.abspath(os.fspath(own_from)).rstrip("/") if own_from is not None else None
    mode = dir_mode()
    parts = target.strip("/").split("/") if target != "/" else []
    current = "/"
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        is_leaf = i == len(parts) - 1
        below_own = own_root is not None and (current == own_root or current.startswith(own_root + "/"))
        must_own = (is_leaf and own_leaf) or below_own
        created = False
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current, mode)
                created = True
            except FileExistsError:
                pass  # someone made it between lstat and mkdir: checked below like any existing one
            st = os.lstat(current)
        if created or must_own:
            _check_own_dir(current, st)
            if stat.S_IMODE(st.st_mode) & ~mode:
                os.chmod(current, stat.S_IMODE(st.st_mode) & mode)
            continue
        if stat.S_ISLNK(st.st_mode):
            # A symlinked ancestor (``/var/tmp -> /tmp`` on some hosts) is followed only when the link
            # itself belongs to root or us; its target must then pass the ancestor rule.
            if not _owner_ok(st.st_uid):
                raise UnsafePathError(f"{current}: a symlink owned by uid {st.st_uid}; refusing to follow it")
            st = os.stat(current)
        _check_ancestor(current, st)
    return target


def open_new(path: str | os.PathLike[str], flags: int = os.O_WRONLY, *, mode: int | None = None) -> int:
    """Create ``path`` exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC``) and return the fd.

    An existing file or a symlink at ``path`` fails with ``FileExistsError``: nothing is followed or
    replaced. ``mode`` defaults to :func:`file_mode`.
    """
    return os.open(os.fspath(path), flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   file_mode() if mode is None else mode)


def open_existing_private(path: str | os.PathLike[str], flags: int = os.O_RDWR, *,
                          mode: int | None = None) -> int:
    """Open ``path`` (created when missing) without following a symlink, and check what was opened.

    For files that live across runs (a journal's ``writer.lock``): the file must be a regular file
    owned by the current user with one link, else :class:`~byteor.UnsafePathError`. A symlink at
    ``path`` fails (``ELOOP``) instead of being followed.
    """
    p = os.fspath(path)
    try:
        fd = os.open(p, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     file_mode() if mode is None else mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise UnsafePathError(f"{p}: is a symlink; byteor never follows links where it writes") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{p}: is {_kind(st.st_mode)}, expected a regular file")
        if st.st_uid != os.geteuid():
            raise UnsafePathError(f"{p}: owned by uid {st.st_uid}, not by this user; refusing to use it")
        if st.st_nlink != 1:
            raise UnsafePathError(f"{p}: has {st.st_nlink} hard links; refusing to use a linked file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                       make_dirs: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync, then rename.

    A reader sees the old file or the new one, never a mix; a failure leaves no temporary file. The
    rename replaces whatever is at ``path`` (a symlink there is replaced, never followed).
    ``make_dirs`` creates missing parent directories (:func:`make_dirs`); ``mode`` defaults to
    :func:`file_mode`.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    if make_dirs:
        _walk_dirs(directory, own_from=None, own_leaf=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), file_mode() if mode is None else mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, mode: int | None = None,
                      make_dirs: bool = False) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode, make_dirs=make_dirs)


def write_bytes_exclusive(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Create ``path`` with :func:`open_new` and write ``data`` (fsynced). ``FileExistsError`` when
    anything (a file, a symlink) is already there."""
    fd = open_new(path, os.O_WRONLY, mode=mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """Up to ``max_bytes + 1`` bytes of the regular file at ``path`` (the caller checks the size).

    Opened non-blocking, so a FIFO never blocks: anything but a regular file raises
    :class:`NotRegularFileError` (an ``OSError`` whose ``strerror`` names the kind). Symlinks given
    by the caller are followed (the operator named the path).
    """
    p = os.fspath(path)
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(21, "Is a directory", p)
            raise NotRegularFileError(p, _kind(st.st_mode))
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, _COPY_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass
class CopyReport:
    """What :func:`copy_tree_nofollow` copied (relative paths) and what it refused, with why."""

    copied: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


def _copy_fd(src_fd: int, dst: str) -> int:
    out = open_new(dst, os.O_WRONLY)
    total = 0
    try:
        while chunk := os.read(src_fd, _COPY_CHUNK):
            view = memoryview(chunk)
            while view:
                n = os.write(out, view)
                view = view[n:]
            total += len(chunk)
        os.fsync(out)
    finally:
        os.close(out)
    return total


def _open_source_file(name: str, dir_fd: int | None, owner: int | None) -> tuple[int | None, str]:
    """Open a file to copy without following a link; (fd, "") or (None, why it is refused)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "a symlink (bundles copy regular files only, never what a link points to)"
        return None, f"cannot open: {exc.strerror}"
    st = os.fstat(fd)
    why = ""
    if not stat.S_ISREG(st.st_mode):
        why = f"{_kind(st.st_mode)}, not a regular file"
    elif st.st_nlink != 1:
        why = f"a file with {st.st_nlink} hard links (it may be another file's contents)"
    elif owner is not None and st.st_uid != owner:
        why = f"owned by uid {st.st_uid}, not by the directory's owner (uid {owner})"
    if why:
        os.close(fd)
        return None, why
    return fd, ""


def copy_file_nofollow(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Copy one regular file (``O_NOFOLLOW`` on the source, :func:`open_new` for the copy); returns
    the bytes copied. A symlink, a linked or non-regular source raises :class:`~byteor.UnsafePathError`."""
    s = os.fspath(src)
    fd, why = _open_source_file(s, None, None)
    if fd is None:
        raise UnsafePathError(f"{s}: {why}")
    try:
        return _copy_fd(fd, os.fspath(dst))
    finally:
        os.close(fd)


def copy_tree_nofollow(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                       skip: Callable[[str], bool] = lambda _name: False) -> CopyReport:
    """Copy the regular files of directory ``src`` (recursively) into the new directory ``dst``.

    Walks by directory file descriptor with ``O_NOFOLLOW`` at every step. Copied: regular files with
    one link owned by the owner of ``src``. Refused (listed in the report with the reason, never
    followed): symlinks, FIFOs, devices, sockets, hard-linked files, files owned by someone else.
    ``skip(name)`` leaves out entries by name (e.g. lock files). ``src`` itself must be a real
    directory (a symlink is refused with :class:`~byteor.UnsafePathError`).
    """
    s = os.fspath(src)
    try:
        root_fd = os.open(s, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a symlink, or not a directory
            raise UnsafePathError(f"{s}: is a symlink or not a directory; refusing to copy it") from None
        raise
    report = CopyReport()
    try:
        owner = os.fstat(root_fd).st_uid
        _copy_dir(root_fd, os.fspath(dst), "", owner, skip, report)
    finally:
        os.close(root_fd)
    return report


def _copy_dir(dir_fd: int, dst: str, rel: str, owner: int, skip: Callable[[str], bool],  # noqa: PLR0917
              report: CopyReport) -> None:
    os.mkdir(dst, dir_mode())
    with os.scandir(dir_fd) as entries:
        names = sorted(e.name for e in entries)
    for name in names:
        shown = f"{rel}{name}"
        if skip(name):
            continue
        st = os.lstat(name, dir_fd=dir_fd)
        if stat.S_ISDIR(st.st_mode):
            if st.st_uid != owner:
                report.refused[shown + "/"] = f"a directory owned by uid {st.st_uid}, not by uid {owner}"
                continue
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                report.refused[shown + "/"] = f"cannot open: {exc.strerror}"
                continue
            try:
                _copy_dir(sub, os.path.join(dst, name), shown + "/", owner, skip, report)
            finally:
                os.close(sub)
            continue
        fd, why = _open_source_file(name, dir_fd, owner)
        if fd is None:
            report.refused[shown] = why
            continue
        try:
            report.bytes += _copy_fd(fd, os.path.join(dst, name))
        finally:
            os.close(fd)
        report.copied.append(shown)
