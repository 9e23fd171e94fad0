"""S3 (or an S3-compatible store) through boto3: ``s3://BUCKET/PREFIX?endpoint=URL&format=lines|len32``.

Credentials, and the region when ``?region=`` is not given, come from the standard AWS chain
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE`` / ...), never from the URI.

Ingress reads every object under ``PREFIX`` in key order, each framed as ``?format=`` says, and
then keeps listing for objects with later keys every ``?poll=`` seconds. Its position is the last
key and the byte offset after the last message that left egress; each commit writes it to the
checkpoint object ``?checkpoint=KEY`` in the same bucket (default ``PREFIX`` without its trailing
``/`` plus ``.byteor-checkpoint.json``), and a restart resumes from there. Keys ending in
``.byteor-checkpoint.json`` are never read as input.

Egress writes what each flush holds (at most ``?batch=`` messages per object) to
``PREFIX<first>.<format>``, ``<first>`` being the zero-padded sequence number of the object's first
message. A failed put is retried under the same name, so it overwrites rather than adds; at
start the sink continues after the highest sequence under the prefix.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._errors import AdapterError, UsageError
from ..edges.base import Batch, Ingress, Sink, Source
from ..edges.framing import FrameParser, encoder
from ._base import Inbox, Outage, require
from ._uri import DEFAULT_PORTS, Endpoint

__all__ = ["S3Sink", "S3Source"]

FORMATS = ("lines", "len32")
CHECKPOINT_SUFFIX = ".byteor-checkpoint.json"
_CHUNK = 1 << 20
_SEQ_DIGITS = 20


def _prefix(ep: Endpoint) -> str:
    return ep.name


def _client(ep: Endpoint) -> Any:
    boto3 = require("boto3", "s3")
    config_mod = require("botocore.config", "s3")

    if ep.username is not None or ep.password is not None:
        raise UsageError(f"{ep.label} {ep.display}: s3:// takes no credentials in the URI; use the standard AWS "
                         "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE)")
    # one attempt inside the client: the adapter's own retries (backoff, events, retry_for) are the one way
    config = config_mod.Config(connect_timeout=ep.connect_timeout, read_timeout=max(30.0, ep.connect_timeout),
                    retries={"total_max_attempts": 1})
    kw: dict[str, Any] = {"config": config}
    endpoint = ep.param("endpoint")
    if endpoint:
        kw["endpoint_url"] = endpoint
    region = ep.param("region")
    if region:
        kw["region_name"] = region
    try:
        return _session(boto3).client("s3", **kw)
    except Exception as exc:  # botocore's NoRegionError, a malformed endpoint URL
        raise AdapterError(f"{ep.display}: cannot make an S3 client: {ep.scrub(exc)}") from exc


_SESSION: Any = None
_SESSION_LOCK = threading.Lock()


def _session(boto3: Any) -> Any:
    """One boto3 session per process: a second client of the same session skips loading the S3
    service model again (0.2-0.4 s each)."""
    global _SESSION  # noqa: PLW0603 - a process-wide cache, set once
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION


def _bucket(ep: Endpoint) -> str:
    return ep.hosts[0][0]


_MISSING = ("NoSuchKey", "404", "NotFound")


def _error_code(exc: BaseException) -> str | None:
    """The store's error code of a refused request (``NoSuchKey``, ``SlowDown``...), else None."""
    errors = require("botocore.exceptions", "s3")
    if isinstance(exc, errors.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return None


def _transient(exc: BaseException) -> bool:
    """A failure worth retrying: the network, a timeout, or the store's 5xx/throttling."""
    errors = require("botocore.exceptions", "s3")
    if isinstance(exc, errors.ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        code = exc.response.get("Error", {}).get("Code", "")
        return int(meta.get("HTTPStatusCode", 0)) >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
    return isinstance(exc, (errors.BotoCoreError, OSError))


def _check_bucket(ep: Endpoint, client: Any) -> None:
    try:
        client.head_bucket(Bucket=_bucket(ep))
    except Exception as exc:
        raise AdapterError(f"{ep.display}: cannot use bucket {_bucket(ep)!r}: {ep.scrub(exc)}") from exc


def _shared_params(ep: Endpoint, *more: str) -> str:
    ep.check_params(("endpoint", "region", "format", *more))
    if len(ep.hosts) != 1 or ep.hosts[0][1] != DEFAULT_PORTS["s3"]:  # the "host" is the bucket: no port
        raise UsageError(f"{ep.label} {ep.display}: s3:// takes a bucket name, not HOST:PORT; give the store's "
                         "address as ?endpoint=URL")
    return ep.choice("format", FORMATS, "lines")


class S3Source(Source):
    acks = True

    def __init__(self, ep: Endpoint) -> None:
        self.fmt = _shared_params(ep, "checkpoint", "poll", "oversize")
        self.ep = ep
        self.name = ep.display
        self.bucket = _bucket(ep)
        self.prefix = _prefix(ep)
        self.checkpoint = ep.param("checkpoint") or self.prefix.rstrip("/") + CHECKPOINT_SUFFIX
        self.poll = ep.number("poll", 1.0, minimum=0.01)
        self.oversize = ep.choice("oversize", ("fail", "skip"), "fail")
        self.outage = Outage(ep, "ingress")
        self._s3: Any = None
        self._inbox = Inbox(4096)
        self._max_bytes: int | None = None
        self._thread: threading.Thread | None = None
        self._ck_thread: threading.Thread | None = None
        self._ck_cond = threading.Condition()
        self._ck_pending: tuple[str, int] | None = None
        self._ck_stop = False
        self._ck_error: BaseException | None = None
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._start: tuple[str, int] | None = None
        self._pos = 0  # the reader's byte offset in the object it reads, after the last message handed over
        self.committed: tuple[str, int] | None = None
        self.reading: str | None = None
        self.objects = 0
        self.messages = 0
        self.skipped = 0

    def bind(self, ingress: Ingress) -> None:
        self._max_bytes = ingress.slot_bytes
        self._inbox = Inbox(ingress.capacity)

    def open(self) -> None:
        self._s3 = _client(self.ep)
        _check_bucket(self.ep, self._s3)
        self._start = self._read_checkpoint()
        self.committed = self._start
        self._thread = threading.Thread(target=self._reader, name="byteor-s3-ingress", daemon=True)
        self._thread.start()
        self._ck_thread = threading.Thread(target=self._checkpointer, name="byteor-s3-checkpoint", daemon=True)
        self._ck_thread.start()
        self.outage.connected()

    def _read_checkpoint(self) -> tuple[str, int] | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self.checkpoint)["Body"].read()
        except Exception as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise AdapterError(f"{self.ep.display}: cannot read the checkpoint {self.checkpoint!r}: "
                               f"{self.ep.scrub(exc)}") from exc
        try:
            data = json.loads(body)
            return str(data["key"]), int(data["offset"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AdapterError(f"{self.ep.display}: checkpoint {self.checkpoint!r} is not a byteor checkpoint "
                               "(expected {\"key\": ..., \"offset\": ...}); remove it to read from the start") from exc

    # -- the reader thread ------------------------------------------------------------------------

    def _reader(self) -> None:
        try:
            self._read_all()
        except _Closed:
            pass
        except BaseException as exc:  # handed to the session by next_batch
            self._error = exc
            self._inbox.close()

    def _retrying(self, fn: Any, **kw: Any) -> Any:
        while not self._closing.is_set():
            try:
                result = fn(**kw)
            except Exception as exc:
                if not _transient(exc):
                    raise AdapterError(f"{self.ep.display}: {self.ep.scrub(exc)}") from exc
                self._closing.wait(self.outage.failed(exc))
                continue
            self.outage.ok()
            return result
        return None

    def _read_all(self) -> None:
        after = ""
        if self._start is not None:
            key, offset = self._start
            after = key
            if offset < self._size(key) and not self._read_object(key, offset):
                return
        while not self._closing.is_set():
            keys = self._list(after)
            for key in keys:
                if not self._read_object(key, 0):
                    return
                after = key
            if not keys:
                self._closing.wait(self.poll)

    def _size(self, key: str) -> int:
        """The size of ``key`` (0 once it is gone)."""
        try:
            head = self._retrying(self._s3.head_object, Bucket=self.bucket, Key=key)
        except AdapterError as exc:
            cause = exc.__cause__
            if cause is not None and _error_code(cause) in _MISSING:
                return 0
            raise
        return 0 if head is None else int(head["ContentLength"])

    def _list(self, after: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "StartAfter": after}
            if token:
                kw["ContinuationToken"] = token
            page = self._retrying(self._s3.list_objects_v2, **kw)
            if page is None:
                return []
            keys += [o["Key"] for o in page.get("Contents", ()) if not o["Key"].endswith(CHECKPOINT_SUFFIX)]
            if not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")

    def _read_object(self, key: str, offset: int) -> bool:
        """Hand every message of ``key`` from byte ``offset`` on to the inbox; False when closing.
        A transfer that breaks is resumed after the last message handed over."""
        self.reading = key
        while not self._closing.is_set():
            kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if offset:
                kw["Range"] = f"bytes={offset}-"
            try:
                body = self._s3.get_object(**kw)["Body"]
                offset = self._parse(key, offset, body)
            except (_Closed, UsageError):
                raise
            except Exception as exc:
                if _error_code(exc) in _MISSING:
                    break  # deleted since it was listed: nothing to read
                if not _transient(exc):
                    raise AdapterError(f"{self.ep.display}: cannot read {key!r}: {self.ep.scrub(exc)}") from exc
                offset = self._pos  # what was handed over before the break is not read again
                self._closing.wait(self.outage.failed(exc))
                continue
            self.outage.ok()
            self.objects += 1
            break
        return not self._closing.is_set()

    def _parse(self, key: str, offset: int, body: Any) -> int:
        """Feed one object's bytes (from ``offset``) through the framing; returns the offset after
        the last whole message. Raises :class:`UsageError` for a malformed object."""
        limit = self._max_bytes
        parser = FrameParser(self.fmt, label=f"{self.ep.display} object {key!r}",
                             max_message_bytes=limit if self.fmt == "len32" else None)
        extra = 1 if self.fmt == "lines" else 4
        pos = self._pos = offset
        for chunk in body.iter_chunks(_CHUNK):
            pos = self._pos = self._hand_over(key, parser.feed(chunk), pos, extra)
            if parser.error is not None:
                raise parser.error
        pos = self._hand_over(key, parser.finish(), pos, 0 if self.fmt == "lines" else extra)
        if parser.error is not None:
            raise parser.error
        return pos

    def _hand_over(self, key: str, msgs: list[bytes], pos: int, extra: int) -> int:
        if not msgs:
            return pos
        items: list[tuple[bytes, Any]] = []
        limit = self._max_bytes
        for m in msgs:
            pos += len(m) + extra
            if limit is not None and len(m) > limit:
                if self.oversize == "fail":
                    raise UsageError(f"{self.ep.display} object {key!r}: a message ending at byte {pos} is {len(m)} "
                                     f"bytes, larger than the ingress slot ({limit} bytes); pass ?oversize=skip")
                self.skipped += 1
                items.append((b"", None))  # keeps the position; dropped in next_batch
                continue
            items.append((m, (key, pos)))
        if not self._inbox.put(items):
            raise _Closed
        return pos

    # -- the session's side ---------------------------------------------------------------------

    def next_batch(self, max_messages: int) -> Batch | None:
        if self._ck_error is not None:
            raise self._ck_error
        items = self._inbox.take(max_messages)
        if not items:
            if self._error is not None:
                err, self._error = self._error, None
                raise err
            self.outage.check()
            return Batch(())
        position = None
        for _, p in reversed(items):
            if p is not None:
                position = p
                break
        out = [m for m, p in items if p is not None]
        self.messages += len(out)
        return Batch(out, position)

    def wait(self, timeout: float) -> None:
        self._inbox.wait(timeout)

    def commit(self, position: Any) -> None:
        # the checkpoint writer puts the latest position: commits that come while a put is under
        # way are one put, and the session's thread never waits for the store
        if position is None:
            return
        with self._ck_cond:
            self._ck_pending = position
            self._ck_cond.notify()

    def _checkpointer(self) -> None:
        while True:
            with self._ck_cond:
                while self._ck_pending is None and not self._ck_stop:
                    self._ck_cond.wait()
                position, self._ck_pending = self._ck_pending, None
            if position is None:
                return  # stopped with nothing left to write
            try:
                self._write_checkpoint(position)
            except BaseException as exc:  # handed to the session by its next next_batch
                self._ck_error = exc
                return

    def _write_checkpoint(self, position: tuple[str, int]) -> None:
        key, offset = position
        body = json.dumps({"key": key, "offset": offset}).encode()
        while True:
            try:
                self._s3.put_object(Bucket=self.bucket, Key=self.checkpoint, Body=body,
                                    ContentType="application/json")
            except Exception as exc:
                if not _transient(exc):
                    raise AdapterError(f"{self.ep.display}: cannot write the checkpoint {self.checkpoint!r}: "
                                       f"{self.ep.scrub(exc)}") from exc
                time.sleep(self.outage.failed(exc))
                continue
            break
        self.committed = (key, offset)

    def close(self) -> None:
        self._closing.set()
        self.outage.closing = True
        self._inbox.close()
        if self._thread is not None:
            self._thread.join(10)
        with self._ck_cond:
            self._ck_stop = True  # the last commit still gets written
            self._ck_cond.notify()
        if self._ck_thread is not None:
            self._ck_thread.join(self.ep.retry_for + 10)

    def describe(self) -> dict[str, Any]:
        committed = None if self.committed is None else {"key": self.committed[0], "offset": self.committed[1]}
        return {"name": self.name, "adapter": "s3", "bucket": self.bucket, "prefix": self.prefix,
                "checkpoint": self.checkpoint, "state": self.outage.state, "committed": committed,
                "reading": self.reading, "objects": self.objects, "messages": self.messages,
                "skipped": self.skipped, "redelivered": self.redelivered, "reconnects": self.outage.reconnects}


class _Closed(Exception):
    """The source closed while the reader waited for room."""


class S3Sink(Sink):
    def __init__(self, ep: Endpoint) -> None:
        self.fmt = _shared_params(ep, "batch")
        self.ep = ep
        self.name = ep.display
        self.bucket = _bucket(ep)
        self.prefix = _prefix(ep)
        self.batch = ep.integer("batch", 10_000, minimum=1)
        self.outage = Outage(ep, "egress")
        self._encode = encoder(self.fmt)
        self._pattern = re.compile(re.escape(self.prefix) + rf"(\d{{{_SEQ_DIGITS}}})\.{self.fmt}$")
        self._s3: Any = None
        self._buf: list[bytes] = []
        self.seq = 0
        self.objects = 0
        self.messages = 0
        self.confirmed = 0

    def open(self) -> None:
        self._s3 = _client(self.ep)
        _check_bucket(self.ep, self._s3)
        self.seq = self._resume()
        self.outage.connected()

    def _resume(self) -> int:
        """The sequence number after the last object a previous run wrote under the prefix."""
        last: str | None = None
        token: str | None = None
        try:
            while True:
                kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
                if token:
                    kw["ContinuationToken"] = token
                page = self._s3.list_objects_v2(**kw)
                for o in page.get("Contents", ()):
                    if self._pattern.match(o["Key"]) and (last is None or o["Key"] > last):
                        last = o["Key"]
                if not page.get("IsTruncated"):
                    break
                token = page.get("NextContinuationToken")
            if last is None:
                return 0
            head = self._s3.head_object(Bucket=self.bucket, Key=last)
        except Exception as exc:
            raise AdapterError(f"{self.ep.display}: cannot list {self.prefix!r}: {self.ep.scrub(exc)}") from exc
        m = self._pattern.match(last)
        assert m is not None
        count = head.get("Metadata", {}).get("byteor-count")
        if count is None or not count.isdigit():
            raise AdapterError(f"{self.ep.display}: {last!r} has no byteor-count metadata, so where the next object "
                               "starts is unknown; write to another prefix")
        return int(m.group(1)) + int(count)

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        self._buf.extend(messages)
        self.messages += len(messages)
        if len(self._buf) >= self.batch:
            self.flush()

    def flush(self) -> None:
        buf = self._buf
        if not buf or self._s3 is None:
            return
        for i in range(0, len(buf), self.batch):
            self._put(buf[i:i + self.batch])
        self._buf = []

    def _put(self, chunk: list[bytes]) -> None:
        body = self._encode(chunk)
        if self.fmt == "lines" and body.count(b"\n") != len(chunk):
            raise AdapterError(f"{self.ep.display}: a message contains a newline, which format=lines cannot carry; "
                               "use format=len32")
        key = f"{self.prefix}{self.seq:0{_SEQ_DIGITS}d}.{self.fmt}"
        while True:
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata={"byteor-count": str(len(chunk))},
                                    ContentType="application/octet-stream")
            except Exception as exc:
                if not _transient(exc):
                    raise AdapterError(f"{self.ep.display}: cannot write {key!r}: {self.ep.scrub(exc)}") from exc
                time.sleep(self.outage.failed(exc))  # the same name again: a retry overwrites, never adds
                continue
            break
        self.outage.ok()
        self.seq += len(chunk)
        self.objects += 1
        self.confirmed += len(chunk)

    def close(self) -> None:
        self._s3 = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "s3", "bucket": self.bucket, "prefix": self.prefix,
                "state": self.outage.state, "objects": self.objects, "next_sequence": self.seq,
                "messages": self.messages, "confirmed": self.confirmed, "reconnects": self.outage.reconnects}
