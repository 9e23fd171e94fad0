"""What every broker adapter shares: the guarded client import, the outage clock (retry with
backoff, give up after ``retry_for``), the event loop thread of the asyncio clients and the
bounded inbox a client thread fills and the run session empties."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from types import ModuleType
from typing import Any, TypeVar

from .._errors import AdapterError
from ..obs.events import emit
from ._uri import Endpoint

__all__ = ["Inbox", "LoopThread", "Outage", "require"]

T = TypeVar("T")

_EXTRAS = {"kafka": ("kafka", "confluent-kafka"), "nats": ("nats", "nats-py"), "redis": ("redis", "redis"),
           "rabbitmq-stream": ("rabbitmq", "rstream"), "mqtt": ("mqtt", "paho-mqtt"),
           "grpc": ("grpc", "grpcio"), "postgresql": ("postgres", "psycopg"), "s3": ("s3", "boto3"),
           "http": ("http", "uvicorn"), "https": ("http", "httpx"), "ws": ("websocket", "websockets")}


def require(module: str, scheme: str) -> ModuleType:
    """Import a transport's client library; without it, an :class:`AdapterError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, dist = _EXTRAS[scheme]
        raise AdapterError(f"{scheme}:// needs the {dist} client, which is not installed: "
                           f"pip install 'byteor[{extra}]'") from exc


class Outage:
    """The connection state of one adapter: ``connected`` or ``reconnecting`` since when.

    :meth:`failed` records a failure and returns how long to wait before the next try (0.1 s
    doubling to 5 s); once the broker has been unreachable for ``retry_for`` seconds it raises
    :class:`AdapterError` (the run fails with exit 1). :meth:`ok` ends an outage. Each transition is
    one lifecycle event (``adapter.reconnecting``, ``adapter.connected``, ``adapter.gave_up``)."""

    def __init__(self, ep: Endpoint, role: str) -> None:
        self.ep = ep
        self.role = role
        self.since: float | None = None
        self.last_error = ""
        self.reconnects = 0
        #: set while the adapter closes on purpose: its client's "disconnected" is no outage
        self.closing = False
        self._delay = 0.1
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return "connected" if self.since is None else "reconnecting"

    def connected(self) -> None:
        emit("adapter.connected", f"{self.role} {self.ep.display}: connected to {self.ep.address}",
             adapter=self.ep.scheme, endpoint=self.ep.display, role=self.role)

    def mark(self, error: object) -> None:
        """A failure reported by a client callback: start the clock, never raise."""
        if self.closing:
            return
        with self._lock:
            self.last_error = self.ep.scrub(error)
            if self.since is None:
                self.since = time.monotonic()
                self.reconnects += 1
                emit("adapter.reconnecting", f"{self.role} {self.ep.display}: connection lost ({self.last_error}); "
                     f"retrying for up to {self.ep.retry_for:g} s", level="warning", adapter=self.ep.scheme,
                     endpoint=self.ep.display, role=self.role, error=self.last_error)

    def check(self) -> None:
        """Raise once the outage has lasted longer than ``retry_for``."""
        since = self.since
        if since is not None and time.monotonic() - since > self.ep.retry_for:
            msg = (f"{self.ep.display}: broker at {self.ep.address} unreachable for more than "
                   f"{self.ep.retry_for:g} s (retry_for); last error: {self.last_error}")
            emit("adapter.gave_up", msg, level="error", adapter=self.ep.scheme, endpoint=self.ep.display,
                 role=self.role)
            raise AdapterError(msg)

    def failed(self, error: BaseException) -> float:
        self.mark(error)
        self.check()
        delay = self._delay
        self._delay = min(self._delay * 2, 5.0)
        return delay

    def ok(self) -> None:
        with self._lock:
            since, self.since = self.since, None
            self._delay = 0.1
        if since is not None:
            emit("adapter.connected", f"{self.role} {self.ep.display}: reconnected after "
                 f"{time.monotonic() - since:.1f} s", adapter=self.ep.scheme, endpoint=self.ep.display,
                 role=self.role)


class LoopThread:
    """An asyncio event loop in a daemon thread, for the asyncio clients (NATS, RabbitMQ Streams).

    :meth:`shared` hands every adapter of the process the same one (counted; the last
    :meth:`stop` ends it): one more thread per adapter would compete for the GIL with the session's
    pump and egress threads."""

    _shared: LoopThread | None = None
    _users = 0
    _guard = threading.Lock()

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._is_shared = False

    @classmethod
    def shared(cls) -> LoopThread:
        with cls._guard:
            if cls._shared is None:
                cls._shared = cls("byteor-asyncio")
                cls._shared._is_shared = True
            cls._users += 1
            return cls._shared

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        if self._is_shared:
            with LoopThread._guard:
                LoopThread._users -= 1
                if LoopThread._users > 0:
                    return
                LoopThread._shared = None
        if self.loop.is_closed():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class Inbox:
    """A bounded hand-over from a client thread (or loop) to the session: the client blocks (or
    awaits) while it is full, which is how backpressure reaches the broker."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._items: deque[tuple[bytes, Any]] = deque()
        self._cond = threading.Condition()
        self.closed = False

    def room(self) -> int:
        return self.capacity - len(self._items)

    def put(self, items: Sequence[tuple[bytes, Any]], timeout: float | None = None) -> bool:
        """Append ``items`` (may exceed capacity by one call's worth); blocks while full. False if
        closed or timed out before there was room."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._items) >= self.capacity and not self.closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            if self.closed:
                return False
            was_empty = not self._items
            self._items.extend(items)
            if was_empty:  # the session waits only on an empty inbox: wake it once, not per message
                self._cond.notify_all()
            return True

    async def put_async(self, items: Sequence[tuple[bytes, Any]]) -> bool:
        while len(self._items) >= self.capacity and not self.closed:
            await asyncio.sleep(0.001)
        if self.closed:
            return False
        with self._cond:
            was_empty = not self._items
            self._items.extend(items)
            if was_empty:
                self._cond.notify_all()
        return True

    def take(self, max_items: int) -> list[tuple[bytes, Any]]:
        with self._cond:
            was_full = len(self._items) >= self.capacity
            n = min(max_items, len(self._items))
            out = [self._items.popleft() for _ in range(n)]
            if n and was_full:  # a client thread waits only on a full inbox
                self._cond.notify_all()
            return out

    def wait(self, timeout: float) -> None:
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
