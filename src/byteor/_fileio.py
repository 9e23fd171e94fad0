"""One way to replace a file so that readers never see half of it (every artifact writer uses it)."""

from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["write_bytes_atomic", "write_text_atomic"]


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644,
                       make_dirs: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync, then rename.

    A reader sees the old file or the new one, never a mix; a failure leaves no temporary file.
    ``make_dirs`` creates the parent directories first.
    """
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    if make_dirs:
        os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, mode: int = 0o644,
                      make_dirs: bool = False) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode, make_dirs=make_dirs)
