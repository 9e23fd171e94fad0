"""Redis Streams through redis-py: ``redis://HOST:PORT/STREAM?group=G&consumer=C``.

Ingress reads with ``XREADGROUP`` as consumer ``C`` of group ``G`` (created at ``0`` with
``MKSTREAM`` when missing) and acknowledges with ``XACK`` once the entries left egress. A consumer
that restarts under the same name first reads its own pending entries again; entries another
consumer left pending longer than ``claim_idle`` seconds (a dead instance) are taken over with
``XAUTOCLAIM``. Both count as ``redelivered``. The message is the entry's field ``data``
(``?field=NAME``); an entry without it is skipped and acknowledged. Egress appends with ``XADD``
(``?maxlen=N`` trims approximately), pipelined and confirmed by :meth:`RedisSink.flush`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from .._errors import AdapterError
from ..edges.base import Batch, Ingress, Sink, Source
from ._base import Outage, require
from ._uri import Endpoint

__all__ = ["RedisSink", "RedisSource"]


def _client(ep: Endpoint) -> Any:
    redis = require("redis", "redis")
    if len(ep.hosts) != 1:
        raise AdapterError(f"{ep.display}: redis:// takes one HOST:PORT")
    host, port = ep.hosts[0]
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # no retries inside the client: the adapter's own (with backoff, events and retry_for) are the one way
    return redis.Redis(host=host, port=port, db=ep.integer("db", 0), username=ep.username, password=ep.password,
                       socket_timeout=max(5.0, ep.connect_timeout), socket_connect_timeout=ep.connect_timeout,
                       retry=Retry(NoBackoff(), 0))


def _connect(ep: Endpoint, client: Any) -> None:
    redis = require("redis", "redis")
    try:
        client.ping()
    except redis.RedisError as exc:
        raise AdapterError(f"{ep.display}: cannot reach Redis at {ep.address}: {ep.scrub(exc)}") from exc


class RedisSource(Source):
    acks = True

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("group", "consumer", "field", "claim_idle", "db", "oversize"))
        self.ep = ep
        self.name = ep.display
        self.group = ep.require("group")
        self.consumer = ep.param("consumer") or socket.gethostname()
        self.field = (ep.param("field") or "data").encode()
        self.claim_idle = ep.number("claim_idle", 30.0, minimum=0.1)
        self.oversize = ep.choice("oversize", ("fail", "skip"), "fail")
        ep.integer("db", 0)
        self.outage = Outage(ep, "ingress")
        self._r: Any = None
        self._redis: Any = None
        self._stash: list[tuple[bytes, dict[bytes, bytes]]] = []
        self._own_cursor: bytes | None = b"0"  # our own pending entries first, then new ones (">")
        self._claim_cursor = b"0-0"
        self._claim_at = 0.0
        self._want = 1
        self._max_bytes: int | None = None
        self._skipped_ids: list[bytes] = []
        self.messages = 0
        self.skipped = 0
        self.acked = 0
        self.last_acked: str | None = None
        self._info: dict[str, Any] = {}
        self._info_at = 0.0

    def bind(self, ingress: Ingress) -> None:
        self._max_bytes = ingress.slot_bytes

    def open(self) -> None:
        self._redis = require("redis", "redis")
        self._r = _client(self.ep)
        _connect(self.ep, self._r)
        try:
            self._r.xgroup_create(self.ep.name, self.group, id="0", mkstream=True)
        except self._redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise AdapterError(f"{self.ep.display}: XGROUP CREATE failed: {self.ep.scrub(exc)}") from exc
        self._claim_at = time.monotonic() + self.claim_idle / 2
        self.outage.connected()

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """One Redis call, retried with backoff while the connection is down (up to retry_for)."""
        redis = self._redis
        while True:
            try:
                result = fn(*args, **kw)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                time.sleep(self.outage.failed(exc))
                continue
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted and recreated: make the group again
                    self._r.xgroup_create(self.ep.name, self.group, id="0", mkstream=True)
                    continue
                raise AdapterError(f"{self.ep.display}: {self.ep.scrub(exc)}") from exc
            self.outage.ok()
            return result

    def _read(self, count: int, block_ms: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        r = self._r
        now = time.monotonic()
        if now >= self._claim_at:
            self._claim_at = now + self.claim_idle / 2
            got = self._call(r.xautoclaim, self.ep.name, self.group, self.consumer,
                             min_idle_time=int(self.claim_idle * 1000), start_id=self._claim_cursor, count=count)
            self._claim_cursor = got[0]
            entries = [e for e in got[1] if e is not None and e[1] is not None]
            if entries:
                self.redelivered += len(entries)
                return entries
        if self._own_cursor is not None:
            res = self._call(r.xreadgroup, self.group, self.consumer, {self.ep.name: self._own_cursor}, count=count)
            entries = res[0][1] if res else []
            entries = [e for e in entries if e[1]]  # an entry deleted since has no fields: nothing to do
            if not entries:
                self._own_cursor = None
            else:
                self._own_cursor = entries[-1][0]
                self.redelivered += len(entries)
                return list(entries)
        res = self._call(r.xreadgroup, self.group, self.consumer, {self.ep.name: ">"}, count=count, block=block_ms)
        return list(res[0][1]) if res else []

    def next_batch(self, max_messages: int) -> Batch | None:
        self._want = max_messages
        if self._stash:
            entries, self._stash = self._stash, []
        else:
            entries = self._read(max_messages, None)
        if not entries:
            return Batch(())
        out: list[bytes] = []
        ids: list[bytes] = []
        limit = self._max_bytes
        for entry_id, fields in entries:
            ids.append(entry_id)
            value = fields.get(self.field)
            if value is None:
                self.skipped += 1
                continue
            if limit is not None and len(value) > limit:
                if self.oversize == "fail":
                    raise AdapterError(f"{self.ep.display}: entry {entry_id.decode()} is {len(value)} bytes, larger "
                                       f"than the ingress slot ({limit} bytes); pass ?oversize=skip to skip it")
                self.skipped += 1
                continue
            out.append(value)
        self.messages += len(out)
        return Batch(out, ids)

    def wait(self, timeout: float) -> None:
        if not self._stash and self._r is not None:
            self._stash = self._read(self._want, max(1, int(timeout * 1000)))

    def commit(self, position: Any) -> None:
        ids: list[bytes] = position
        for i in range(0, len(ids), 2000):
            chunk = ids[i:i + 2000]
            self._call(self._r.xack, self.ep.name, self.group, *chunk)
        if ids:
            self.acked += len(ids)
            self.last_acked = ids[-1].decode()

    def close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            r.close()

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._r is not None and now - self._info_at >= 1.0:
            self._info_at = now
            try:
                for g in self._r.xinfo_groups(self.ep.name):
                    name = g.get("name")
                    if name in (self.group, self.group.encode()):
                        self._info = {"lag": g.get("lag"), "pending": g.get("pending")}
            except self._redis.RedisError:
                pass
        return {"name": self.name, "adapter": "redis", "group": self.group, "consumer": self.consumer,
                "state": self.outage.state, "committed": self.last_acked, "acked": self.acked, **self._info,
                "messages": self.messages, "redelivered": self.redelivered, "skipped": self.skipped,
                "reconnects": self.outage.reconnects}


class RedisSink(Sink):
    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("field", "maxlen", "db"))
        self.ep = ep
        self.name = ep.display
        self.field = (ep.param("field") or "data").encode()
        self.maxlen = ep.integer("maxlen", 0, minimum=1) if ep.param("maxlen") is not None else None
        ep.integer("db", 0)
        self.outage = Outage(ep, "egress")
        self._r: Any = None
        self._buf: list[bytes] = []
        self.messages = 0
        self.confirmed = 0

    def open(self) -> None:
        self._redis = require("redis", "redis")
        self._r = _client(self.ep)
        _connect(self.ep, self._r)
        self.outage.connected()

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        self._buf.extend(messages)
        self.messages += len(messages)
        if len(self._buf) >= 4096:
            self.flush()

    def flush(self) -> None:
        buf = self._buf
        if not buf or self._r is None:
            return
        redis = self._redis
        name, field, maxlen = self.ep.name, self.field, self.maxlen
        while True:
            pipe = self._r.pipeline(transaction=False)
            for m in buf:
                pipe.xadd(name, {field: m}, maxlen=maxlen, approximate=True)
            try:
                pipe.execute()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                time.sleep(self.outage.failed(exc))  # a partly applied pipeline repeats: at least once
                continue
            except redis.RedisError as exc:
                raise AdapterError(f"{self.ep.display}: XADD failed: {self.ep.scrub(exc)}") from exc
            break
        self.outage.ok()
        self.confirmed += len(buf)
        self._buf = []

    def close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            r.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "redis", "state": self.outage.state, "messages": self.messages,
                "confirmed": self.confirmed, "reconnects": self.outage.reconnects}
