"""RabbitMQ Streams through rstream: ``rabbitmq-stream://USER:PASS@HOST:PORT/STREAM?consumer=NAME``.

Ingress subscribes to ``STREAM`` as the named consumer and resumes after the offset the server
stores for that name (``store_offset``/``query_offset``: server-side offset tracking); a new name
starts at ``?offset=first|last|next`` (default ``first``). The offset is stored once the messages up
to it left egress; beside it the highest offset fetched is stored as ``NAME~fetched``, so after a
crash the messages between the two count as ``redelivered``. Egress publishes AMQP 1.0 messages
whose body is the message, and :meth:`RabbitSink.flush` waits for the server's publish confirms.
The message is the AMQP body (a data section); properties and application properties are not
passed on. Credentials default to ``guest``/``guest`` only when neither the URI nor
``BYTEOR_RABBITMQ_STREAM_USERNAME``/``_PASSWORD`` give them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from .._errors import AdapterError
from ..edges.base import Batch, Ingress, Sink, Source
from ._base import Inbox, LoopThread, Outage, require
from ._uri import Endpoint

__all__ = ["RabbitSink", "RabbitSource"]

_BATCH_BYTES = 512 * 1024


def _kw(ep: Endpoint) -> dict[str, Any]:
    if len(ep.hosts) != 1:
        raise AdapterError(f"{ep.display}: rabbitmq-stream:// takes one HOST:PORT")
    host, port = ep.hosts[0]
    return {"host": host, "port": port, "username": ep.username or "guest", "password": ep.password or "guest",
            "vhost": ep.param("vhost", "/"), "load_balancer_mode": ep.param("load_balancer", "0") == "1",
            "heartbeat": 10}


def _body(message: Any) -> bytes:
    body = getattr(message, "body", message)
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, list):  # several data sections
        return b"".join(bytes(b) for b in body)
    if isinstance(body, str):
        return body.encode()
    return bytes(body) if body is not None else b""


class RabbitSource(Source):
    acks = True

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("consumer", "offset", "vhost", "load_balancer", "oversize"))
        _kw(ep)
        self.ep = ep
        self.name = ep.display
        self.consumer_name = ep.require("consumer")
        self.start_at = ep.choice("offset", ("first", "last", "next"), "first")
        self.oversize = ep.choice("oversize", ("fail", "skip"), "fail")
        self.outage = Outage(ep, "ingress")
        self._loop: LoopThread | None = None
        self._consumer: Any = None
        self._inbox = Inbox(4096)
        self._max_bytes: int | None = None
        self._next = 0  # the first offset not yet handed over (skip a chunk's earlier messages)
        self._seen = -1
        self._fetched = -1
        self.committed: int | None = None
        self._closing = False
        self._health: Any = None
        self.messages = 0
        self.skipped = 0
        self._stores: list[Any] = []

    def bind(self, ingress: Ingress) -> None:
        self._max_bytes = ingress.slot_bytes
        self._inbox = Inbox(ingress.capacity)

    def open(self) -> None:
        rstream = require("rstream", "rabbitmq-stream")
        self._loop = LoopThread.shared()
        try:
            self._loop.run(self._start(rstream), self.ep.connect_timeout * 2 + 1)
        except AdapterError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise AdapterError(f"{self.ep.display}: cannot consume from RabbitMQ Streams at {self.ep.address}: "
                               f"{self.ep.scrub(exc) or type(exc).__name__}") from exc
        self._health = self._loop.submit(self._watch())
        self.outage.connected()

    async def _on_close(self, info: Any) -> None:
        if not self._closing:
            self.outage.mark(getattr(info, "reason", "connection closed"))

    async def _new_consumer(self, rstream: Any) -> Any:
        from rstream.recovery import BackOffRecoveryStrategy

        # the client's own recovery is off: _watch reconnects and resumes after the last offset handed over
        consumer = rstream.Consumer(**_kw(self.ep), on_close_handler=self._on_close,
                                    recovery_strategy=BackOffRecoveryStrategy(enable=False))
        await asyncio.wait_for(consumer.start(), self.ep.connect_timeout)
        return consumer

    async def _start(self, rstream: Any) -> None:
        consumer = self._consumer = await self._new_consumer(rstream)
        stream = self.ep.name
        if not await consumer.stream_exists(stream):
            raise AdapterError(f"{self.ep.display}: stream {stream!r} does not exist")
        committed = await self._query(self.consumer_name)
        self._seen = await self._query(self.consumer_name + "~fetched")
        if committed >= 0:
            self.committed = committed
            spec = rstream.ConsumerOffsetSpecification(rstream.OffsetType.OFFSET, committed + 1)
            self._next = committed + 1
        else:
            kind = {"first": rstream.OffsetType.FIRST, "last": rstream.OffsetType.LAST,
                    "next": rstream.OffsetType.NEXT}[self.start_at]
            spec = rstream.ConsumerOffsetSpecification(kind, None)
        await consumer.subscribe(stream, self._on_message, decoder=rstream.amqp_decoder,
                                 offset_specification=spec, subscriber_name=self.consumer_name, initial_credit=8)

    async def _query(self, name: str) -> int:
        rstream = require("rstream", "rabbitmq-stream")
        try:
            return int(await self._consumer.query_offset(self.ep.name, name))
        except rstream.OffsetNotFound:
            return -1

    async def _on_message(self, message: Any, ctx: Any) -> None:
        offset = ctx.offset
        if offset < self._next:
            return
        self._next = offset + 1
        if offset <= self._seen:
            self.redelivered += 1
        await self._inbox.put_async([(_body(message), offset)])

    async def _watch(self) -> None:
        rstream = require("rstream", "rabbitmq-stream")
        while not self._closing:
            await asyncio.sleep(0.5)
            if self.outage.since is None:
                continue
            old, self._consumer = self._consumer, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 2.0)
            try:
                consumer = await self._new_consumer(rstream)
                spec = rstream.ConsumerOffsetSpecification(rstream.OffsetType.OFFSET, self._next)
                await consumer.subscribe(self.ep.name, self._on_message, decoder=rstream.amqp_decoder,
                                         offset_specification=spec, subscriber_name=self.consumer_name,
                                         initial_credit=8)
            except Exception as exc:  # still unreachable: try again; next_batch gives up after retry_for
                self.outage.mark(exc)
                continue
            self._consumer = consumer
            self.outage.ok()

    def next_batch(self, max_messages: int) -> Batch | None:
        self.outage.check()
        items = self._inbox.take(max_messages)
        if not items:
            return Batch(())
        limit = self._max_bytes
        out: list[bytes] = []
        for data, offset in items:
            if limit is not None and len(data) > limit:
                if self.oversize == "fail":
                    raise AdapterError(f"{self.ep.display}: message at offset {offset} is {len(data)} bytes, larger "
                                       f"than the ingress slot ({limit} bytes); pass ?oversize=skip to skip it")
                self.skipped += 1
                continue
            out.append(data)
        self._fetched = max(self._fetched, items[-1][1])
        self.messages += len(out)
        return Batch(out, items[-1][1])

    def wait(self, timeout: float) -> None:
        self._inbox.wait(timeout)

    def commit(self, position: Any) -> None:
        if self._loop is None or position is None:
            return
        self.committed = int(position)
        self._stores = [f for f in self._stores if not f.done()]
        self._stores.append(self._loop.submit(self._store(int(position), self._fetched)))

    async def _store(self, offset: int, fetched: int) -> None:
        try:
            await self._consumer.store_offset(self.ep.name, self.consumer_name, offset)
            await self._consumer.store_offset(self.ep.name, self.consumer_name + "~fetched", fetched)
        except Exception as exc:  # not stored: those messages come again after a restart
            self.outage.mark(exc)

    def close(self) -> None:
        self._closing = True
        self.outage.closing = True
        self._inbox.close()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for f in self._stores:
            with contextlib.suppress(Exception):
                f.result(5)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                loop.run(self._consumer.close(), 6)
        loop.stop()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "rabbitmq-stream", "consumer": self.consumer_name,
                "state": self.outage.state, "committed": self.committed, "messages": self.messages,
                "redelivered": self.redelivered, "skipped": self.skipped, "reconnects": self.outage.reconnects}


class RabbitSink(Sink):
    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("vhost", "load_balancer"))
        _kw(ep)
        self.ep = ep
        self.name = ep.display
        self.outage = Outage(ep, "egress")
        self._loop: LoopThread | None = None
        self._producer: Any = None
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._sent = 0
        self._acked = 0
        self._failed = 0
        self._unconfirmed: dict[int, bytes] = {}
        self._early: dict[int, bool] = {}  # confirms that arrived before send_batch returned
        self._retry: list[bytes] = []
        self.messages = 0

    def open(self) -> None:
        rstream = require("rstream", "rabbitmq-stream")
        self._loop = LoopThread.shared()

        async def start() -> None:
            async def on_close(info: Any) -> None:
                if self._loop is not None:
                    self.outage.mark(getattr(info, "reason", "connection closed"))

            self._producer = rstream.Producer(**_kw(self.ep), on_close_handler=on_close)
            await asyncio.wait_for(self._producer.start(), self.ep.connect_timeout)
            if not await self._producer.stream_exists(self.ep.name):
                raise AdapterError(f"{self.ep.display}: stream {self.ep.name!r} does not exist")

        try:
            self._loop.run(start(), self.ep.connect_timeout * 2 + 1)
        except AdapterError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise AdapterError(f"{self.ep.display}: cannot reach RabbitMQ Streams at {self.ep.address}: "
                               f"{self.ep.scrub(exc) or type(exc).__name__}") from exc
        self.outage.connected()

    def _on_confirm(self, status: Any) -> None:
        with self._done:
            body = self._unconfirmed.pop(status.message_id, None)
            if body is None:
                self._early[status.message_id] = bool(status.is_confirmed)
                return
            if status.is_confirmed:
                self._acked += 1
            else:
                self._failed += 1
                self._retry.append(body)
            self._done.notify_all()

    async def _send(self, msgs: Sequence[bytes]) -> None:
        rstream = require("rstream", "rabbitmq-stream")
        i = 0
        while i < len(msgs):
            size = 0
            j = i
            while j < len(msgs) and (j == i or size + len(msgs[j]) < _BATCH_BYTES):
                size += len(msgs[j]) + 64
                j += 1
            batch = [rstream.AMQPMessage(body=m) for m in msgs[i:j]]
            while True:
                try:
                    ids = await self._producer.send_batch(self.ep.name, batch, on_publish_confirm=self._on_confirm)
                    break
                except Exception as exc:
                    await asyncio.sleep(self.outage.failed(exc))
            with self._lock:
                for pid, m in zip(ids, msgs[i:j], strict=False):
                    early = self._early.pop(pid, None)
                    if early is None:
                        self._unconfirmed[pid] = m
                    elif early:
                        self._acked += 1
                    else:
                        self._retry.append(m)
                self._sent += len(ids)
            i = j

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        assert self._loop is not None
        self._loop.run(self._send(list(messages)), self.ep.retry_for + 10)
        self.messages += len(messages)

    def flush(self) -> None:
        if self._loop is None:
            return
        deadline = time.monotonic() + self.ep.retry_for
        while True:
            with self._done:
                while self._unconfirmed and time.monotonic() < deadline:
                    self._done.wait(0.1)
                retry, self._retry = self._retry, []
                left = len(self._unconfirmed)
            if retry:  # refused by the server: publish again (at least once)
                self._loop.run(self._send(retry), self.ep.retry_for + 10)
                continue
            if left:
                self.outage.mark(f"{left} publish confirm(s) missing")
                raise AdapterError(f"{self.ep.display}: {left} message(s) not confirmed by RabbitMQ at "
                                   f"{self.ep.address} within {self.ep.retry_for:g} s (retry_for)")
            self.outage.ok()
            return

    def close(self) -> None:
        self.outage.closing = True
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._producer is not None:
            with contextlib.suppress(Exception):
                loop.run(self._producer.close(), 6)
        loop.stop()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "rabbitmq-stream", "state": self.outage.state, "messages": self.messages,
                "confirmed": self._acked, "reconnects": self.outage.reconnects}
