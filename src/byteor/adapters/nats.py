"""NATS JetStream through nats-py: ``nats://HOST:PORT[,HOST:PORT]/SUBJECT?stream=S&durable=D``.

Ingress is a durable pull consumer ``D`` on stream ``S`` with explicit acks (created with
``ack_wait`` and ``max_ack_pending`` from the URI when it does not exist yet); each message is
acknowledged once it left egress. Messages the server hands over again (``num_delivered > 1``:
a crash, a takeover, an ack that came too late) count as ``redelivered``. Egress publishes to
``SUBJECT`` and :meth:`NatsSink.flush` waits for the stream's ack of every message (``?stream=S``
makes the server check the stream). The message is the payload; the subject and headers are not
passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from .._errors import AdapterError
from ..edges.base import Batch, Ingress, Sink, Source
from ._base import Inbox, LoopThread, Outage, require
from ._uri import Endpoint

__all__ = ["NatsSink", "NatsSource"]


async def _connect(ep: Endpoint, outage: Outage) -> Any:
    nats = require("nats", "nats")

    async def disconnected() -> None:
        outage.mark("disconnected")

    async def reconnected() -> None:
        outage.ok()

    async def error(exc: Exception) -> None:
        outage.mark(exc)

    kw: dict[str, Any] = {}
    if ep.username and ep.password is None:
        kw["token"] = ep.username
    elif ep.username or ep.password:
        kw.update(user=ep.username or "", password=ep.password or "")
    return await nats.connect(servers=[f"nats://{h}:{p}" for h, p in ep.hosts], connect_timeout=ep.connect_timeout,
                              allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                              disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error,
                              ping_interval=5, max_outstanding_pings=2, **kw)


def _open(ep: Endpoint, outage: Outage, loop: LoopThread) -> Any:
    try:
        return loop.run(_connect(ep, outage), ep.connect_timeout * 2 + 1)
    except Exception as exc:
        loop.stop()
        raise AdapterError(f"{ep.display}: cannot reach NATS at {ep.address}: "
                           f"{ep.scrub(exc) or type(exc).__name__}") from exc


class NatsSource(Source):
    acks = True

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("stream", "durable", "ack_wait", "max_ack_pending", "oversize"))
        self.ep = ep
        self.name = ep.display
        self.stream = ep.require("stream")
        self.durable = ep.require("durable")
        self.ack_wait = ep.number("ack_wait", 30.0, minimum=0.1)
        self.max_ack_pending = ep.integer("max_ack_pending", 20000, minimum=1)
        self.oversize = ep.choice("oversize", ("fail", "skip"), "fail")
        self.outage = Outage(ep, "ingress")
        self._loop: LoopThread | None = None
        self._nc: Any = None
        self._psub: Any = None
        self._inbox = Inbox(4096)
        self._task: Any = None
        self._closing = False
        self._max_bytes: int | None = None
        self._acks: list[Any] = []
        self._info: dict[str, Any] = {}
        self.messages = 0
        self.skipped = 0
        self.acked = 0
        self._error: BaseException | None = None

    def bind(self, ingress: Ingress) -> None:
        self._max_bytes = ingress.slot_bytes
        self._inbox = Inbox(ingress.capacity)

    def open(self) -> None:
        nats = require("nats", "nats")
        from nats.js.api import AckPolicy, ConsumerConfig

        self._loop = LoopThread.shared()
        self._nc = _open(self.ep, self.outage, self._loop)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
                                max_ack_pending=self.max_ack_pending)

        async def subscribe() -> Any:
            js = self._nc.jetstream()
            return await js.pull_subscribe(self.ep.name, durable=self.durable, stream=self.stream, config=config)

        try:
            self._psub = self._loop.run(subscribe(), self.ep.connect_timeout * 2 + 1)
        except (nats.errors.Error, TimeoutError) as exc:
            self.close()
            raise AdapterError(f"{self.ep.display}: cannot consume stream {self.stream!r} as {self.durable!r}: "
                               f"{self.ep.scrub(exc) or type(exc).__name__}") from exc
        self._task = self._loop.submit(self._fetch_loop())
        self.outage.connected()

    async def _fetch_loop(self) -> None:
        nats = require("nats", "nats")
        inbox = self._inbox
        info_at = 0.0
        while not self._closing:
            now = time.monotonic()
            if now - info_at >= 1.0:
                info_at = now
                with contextlib.suppress(Exception):
                    ci = await self._psub.consumer_info()
                    self._info = {"lag": ci.num_pending, "ack_pending": ci.num_ack_pending,
                                  "committed": ci.ack_floor.stream_seq if ci.ack_floor else None}
            room = inbox.room()
            if room <= 0:
                await asyncio.sleep(0.002)
                continue
            try:
                msgs = await self._psub.fetch(min(room, 512), timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected, or the consumer went away: the session sees the outage
                self.outage.mark(exc)
                await asyncio.sleep(0.2)
                continue
            redelivered = 0
            for m in msgs:
                with contextlib.suppress(Exception):
                    if m.metadata.num_delivered > 1:
                        redelivered += 1
            self.redelivered += redelivered
            await inbox.put_async([(m.data, m) for m in msgs])

    def next_batch(self, max_messages: int) -> Batch | None:
        self.outage.check()
        items = self._inbox.take(max_messages)
        if not items:
            return Batch(())
        limit = self._max_bytes
        out: list[bytes] = []
        for data, m in items:
            if limit is not None and len(data) > limit:
                if self.oversize == "fail":
                    seq = getattr(getattr(m, "metadata", None), "sequence", None)
                    raise AdapterError(f"{self.ep.display}: message {getattr(seq, 'stream', '?')} is {len(data)} "
                                       f"bytes, larger than the ingress slot ({limit} bytes); pass ?oversize=skip "
                                       "to skip such messages")
                self.skipped += 1
                continue
            out.append(data)
        self.messages += len(out)
        return Batch(out, [m for _, m in items])

    def wait(self, timeout: float) -> None:
        self._inbox.wait(timeout)

    def commit(self, position: Any) -> None:
        msgs: list[Any] = position
        if self._loop is None or not msgs:
            return
        self._acks = [f for f in self._acks if not f.done()]
        self._acks.append(self._loop.submit(self._ack(msgs)))
        self.acked += len(msgs)

    @staticmethod
    async def _ack(msgs: list[Any]) -> None:
        for m in msgs:
            with contextlib.suppress(Exception):  # a lost ack means the message comes again
                await m.ack()

    def close(self) -> None:
        self._closing = True
        self.outage.closing = True
        self._inbox.close()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for f in self._acks:
            with contextlib.suppress(Exception):
                f.result(5)
        if self._task is not None:
            self._task.cancel()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                loop.run(self._nc.flush(timeout=5), 6)
            with contextlib.suppress(Exception):
                loop.run(self._nc.close(), 6)
        loop.stop()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "nats", "stream": self.stream, "durable": self.durable,
                "state": self.outage.state, **self._info, "acked": self.acked, "messages": self.messages,
                "redelivered": self.redelivered, "skipped": self.skipped, "reconnects": self.outage.reconnects}


class NatsSink(Sink):
    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("stream",))
        self.ep = ep
        self.name = ep.display
        self.stream = ep.param("stream")
        self.outage = Outage(ep, "egress")
        self._loop: LoopThread | None = None
        self._nc: Any = None
        self._js: Any = None
        self._inflight: list[tuple[bytes, Any]] = []
        self.messages = 0
        self.confirmed = 0

    def open(self) -> None:
        self._loop = LoopThread.shared()
        self._nc = _open(self.ep, self.outage, self._loop)
        self._js = self._nc.jetstream(publish_async_max_pending=20000)
        self.outage.connected()

    async def _send(self, msgs: Sequence[bytes]) -> None:
        js, subject, stream = self._js, self.ep.name, self.stream
        inflight = self._inflight
        for m in msgs:
            while True:
                try:
                    # no wait_stall: with one, every call schedules a timeout task, yields to the loop
                    # and the client writes each message to the socket by itself
                    fut = await js.publish_async(subject, m, stream=stream)
                    break
                except Exception as exc:
                    await asyncio.sleep(self.outage.failed(exc))
            inflight.append((m, fut))

    async def _confirm(self) -> None:
        pending, self._inflight = self._inflight, []
        while pending:
            await asyncio.wait([f for _, f in pending], timeout=2.0)
            failed: list[tuple[bytes, Any]] = []
            error: BaseException | None = None
            for m, f in pending:
                if not f.done():
                    failed.append((m, f))
                    error = error or TimeoutError("no ack from the stream within 2 s")
                elif f.cancelled() or f.exception() is not None:
                    failed.append((m, f))
                    error = error or (f.exception() if not f.cancelled() else TimeoutError("cancelled"))
                else:
                    self.confirmed += 1
            if not failed:
                break
            for _, f in failed:
                if not f.done():
                    f.cancel()
            assert error is not None
            if _is_permanent(error):
                raise AdapterError(f"{self.ep.display}: publish refused: {self.ep.scrub(error)}") from error
            await asyncio.sleep(self.outage.failed(error))  # republish: at least once
            self._inflight = []
            await self._send([m for m, _ in failed])
            pending, self._inflight = self._inflight, []
        self.outage.ok()

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        assert self._loop is not None
        self._loop.run(self._send(list(messages)), self.ep.retry_for + 10)
        self.messages += len(messages)

    def flush(self) -> None:
        if self._loop is None or not self._inflight:
            return
        self._loop.run(self._confirm(), self.ep.retry_for + 30)

    def close(self) -> None:
        self.outage.closing = True
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._nc is not None:
            with contextlib.suppress(Exception):
                loop.run(self._nc.close(), 6)
        loop.stop()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "nats", "state": self.outage.state, "messages": self.messages,
                "confirmed": self.confirmed, "reconnects": self.outage.reconnects}


def _is_permanent(exc: BaseException) -> bool:
    """A publish the server refuses for good (no stream for the subject, a wrong expected stream)."""
    name = type(exc).__name__
    return name in ("NoStreamResponseError", "BadRequestError", "NotFoundError") or "no responders" in str(exc).lower()
