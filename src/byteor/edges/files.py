"""The first sources and sinks: files and the standard streams, in the framings of
:mod:`byteor.edges.framing`, plus in-memory ones for the Python API and tests.

A :class:`FileSource` on a regular file reads it directly; on a pipe, a terminal or a socket a
reader thread does the blocking reads into a bounded queue (at most 64 chunks of 64 KiB), so
``next_batch`` never blocks and a paused writer never holds the pipeline's output back. A
:class:`FileSink` writes through a buffer that the session flushes at least every
:attr:`~byteor.edges.base.Sink.flush_interval` seconds while messages flow, so an output file
shows every message finished more than a second ago while a long run goes on.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

from .._errors import UsageError
from .._fileio import file_mode
from .base import Batch, Sink, Source
from .framing import FrameParser, encoder

__all__ = ["CallbackSink", "CollectSink", "FileSink", "FileSource", "IterableSource"]

CHUNK = 64 * 1024
_QUEUE_CHUNKS = 64


class FileSource(Source):
    """Messages from a file or ``-`` (stdin) in framing ``fmt`` (``lines``, ``hex``, ``len32``).

    ``label`` names the option in errors (``--input line 3 is not valid hex: ...``).
    ``max_message_bytes`` (the ingress slot size) lets ``len32`` refuse an oversized message before
    reading it. Raises :class:`UsageError` (exit 2) for a missing file and for malformed input,
    the latter only after every message before the bad one was handed out."""

    def __init__(self, path: str, fmt: str = "lines", *, label: str = "--input",
                 max_message_bytes: int | None = None) -> None:
        self.path = path
        self.name = "stdin" if path == "-" else path
        self.label = label
        self._parser = FrameParser(fmt, label=label, max_message_bytes=max_message_bytes)
        self._fd = -1
        self._own = False
        self._pending: deque[bytes] = deque()
        self._eof = False
        self._queue: queue.Queue[bytes | BaseException | None] | None = None
        self._ready = threading.Event()
        self.messages = 0

    @property
    def framing(self) -> str:
        """The input framing (``lines``, ``hex``, ``len32``)."""
        return self._parser.fmt

    def open(self) -> None:
        if not stat.S_ISREG(os.fstat(self.open_descriptor()).st_mode):
            self._queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
            threading.Thread(target=self._reader, name="byteor-input", daemon=True).start()

    def open_descriptor(self) -> int:
        """Open the file (or take stdin) and return its descriptor, for an engine that reads and
        parses it itself in :attr:`framing` (the multi-process executor's native ingest) instead of
        calling :meth:`open` and :meth:`next_batch`. :meth:`close` closes what was opened here.
        Raises :class:`UsageError` as :meth:`open` does."""
        if self.path == "-":
            self._fd = sys.stdin.fileno()
        else:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise UsageError(f"{self.label} file not found: {self.path}") from None
            except OSError as exc:
                raise UsageError(f"{self.label} {self.path}: {exc.strerror}") from None
            self._own = True
        return self._fd

    def _reader(self) -> None:
        assert self._queue is not None
        try:
            while True:
                chunk = os.read(self._fd, CHUNK)
                self._queue.put(chunk if chunk else None)
                self._ready.set()
                if not chunk:
                    return
        except OSError as exc:
            self._queue.put(exc)
            self._ready.set()

    def _read(self) -> bytes | None:
        """The next chunk, b"" when none is ready yet, None at end of input."""
        if self._queue is None:
            chunk = os.read(self._fd, CHUNK)
            return chunk or None
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            self._ready.clear()
            return b""
        if isinstance(item, BaseException):
            raise UsageError(f"{self.label} {self.name}: read failed: {item}")
        return item

    def next_batch(self, max_messages: int) -> Batch | None:
        pending = self._pending
        while len(pending) < max_messages and not self._eof and self._parser.error is None:
            chunk = self._read()
            if chunk is None:
                self._eof = True
                pending.extend(self._parser.finish())
            elif not chunk:
                break
            else:
                pending.extend(self._parser.feed(chunk))
        if not pending:
            if self._parser.error is not None:
                raise self._parser.error
            return None if self._eof else Batch(())
        n = min(max_messages, len(pending))
        out = [pending.popleft() for _ in range(n)]
        self.messages += n
        return Batch(out, self.messages)

    def wait(self, timeout: float) -> None:
        if self._queue is not None and not self._eof:
            self._ready.wait(timeout)

    def close(self) -> None:
        if self._own and self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1


class IterableSource(Source):
    """Messages from a Python iterable. A list or tuple is read directly; any other iterable (a
    generator that may pause, e.g. one waiting for the pipeline's answers) is read by a thread into
    a bounded buffer (at most 65,536 messages), so ``next_batch`` never blocks and every message is
    visible as soon as the iterable yields it. An exception raised by the iterable is raised by
    ``next_batch`` after the messages before it."""

    LIMIT = 65536

    def __init__(self, items: Iterable[bytes | bytearray | memoryview], name: str = "iterable") -> None:
        self.name = name
        self._items = items
        self._direct = isinstance(items, list | tuple)
        self._pos = 0
        self._buf: deque[bytes] = deque()
        self._ready = threading.Event()
        self._space = threading.Event()
        self._space.set()
        self._done = False
        self._error: BaseException | None = None
        self._halt = False
        self.messages = 0

    def open(self) -> None:
        if not self._direct:
            threading.Thread(target=self._reader, name="byteor-iterable", daemon=True).start()

    def _reader(self) -> None:
        buf, limit = self._buf, self.LIMIT
        try:
            for item in self._items:
                buf.append(item if isinstance(item, bytes) else bytes(item))
                self._ready.set()
                if len(buf) >= limit:
                    self._space.clear()
                    if len(buf) >= limit:  # the consumer may have made room in between
                        self._space.wait()
                if self._halt:
                    return
        except BaseException as exc:  # handed to the session by next_batch, after what came before
            self._error = exc
        finally:
            self._done = True
            self._ready.set()

    def next_batch(self, max_messages: int) -> Batch | None:
        if self._direct:
            assert isinstance(self._items, list | tuple)
            items = self._items[self._pos:self._pos + max_messages]
            if not items:
                return None
            self._pos += len(items)
            self.messages += len(items)
            return Batch([m if isinstance(m, bytes) else bytes(m) for m in items], self.messages)
        buf = self._buf
        done = self._done  # read before the buffer: everything appended before it is in there
        if not buf:
            if done:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return None
            self._ready.clear()
            if not buf:  # an append between the check and the clear set the event again
                return Batch(())
        n = min(max_messages, len(buf))
        out = [buf.popleft() for _ in range(n)]
        if len(buf) < self.LIMIT // 2:
            self._space.set()
        self.messages += n
        return Batch(out, self.messages)

    def wait(self, timeout: float) -> None:
        if not self._direct and not self._done:
            self._ready.wait(timeout)

    def close(self) -> None:
        self._halt = True
        self._space.set()


class FileSink(Sink):
    """Messages to a file or ``-`` (stdout) in output framing ``fmt``."""

    def __init__(self, path: str, fmt: str = "hex", *, label: str = "--output-file") -> None:
        self.path = path
        self.name = "stdout" if path == "-" else path
        self.label = label
        #: the output framing (``hex``, ``ascii``, ``raw``, ``lines``, ``len32``)
        self.framing = fmt
        self._encode = encoder(fmt)
        self._fh: IO[bytes] | None = None
        self._own = False
        self.messages = 0

    def open(self) -> None:
        if self.path == "-":
            self._fh = sys.stdout.buffer
            return
        try:
            # O_NOFOLLOW: an output path that is a symlink is refused, never written through
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         file_mode())
            self._fh = open(fd, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise UsageError(f"{self.label} {self.path}: {exc.strerror}") from None
        self._own = True

    def fileno(self) -> int | None:
        """After :meth:`open`: the descriptor the messages go to, with everything written so far
        flushed to it, for an engine that encodes :attr:`framing` and writes it itself (the
        multi-process executor's native egress) instead of calling :meth:`write`. None when the
        stream has no descriptor (a replaced ``sys.stdout``)."""
        assert self._fh is not None
        try:
            self._fh.flush()
            return self._fh.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            return None

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        assert self._fh is not None
        self._fh.write(self._encode(messages))
        self.messages += len(messages)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.flush()
        finally:
            if self._own:
                fh.close()


class CollectSink(Sink):
    """Keeps every message (as bytes, or as lowercase hex with ``as_hex``) in :attr:`items`."""

    def __init__(self, *, as_hex: bool = False, name: str = "memory") -> None:
        self.name = name
        self.as_hex = as_hex
        self.items: list[Any] = []

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        if self.as_hex:
            self.items.extend(m.hex() for m in messages)
        else:
            self.items.extend(messages)


class CallbackSink(Sink):
    """Calls ``fn(key, message)`` for every message; ``key`` is the shard index, or the egress
    endpoint's name when one was given (LaneGraph)."""

    def __init__(self, fn: Callable[[Any, bytes], None], *, endpoint: str | None = None) -> None:
        self.name = endpoint or "callback"
        self._fn = fn
        self._endpoint = endpoint

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        fn = self._fn
        key: Any = self._endpoint if self._endpoint is not None else shard
        for m in messages:
            fn(key, m)
