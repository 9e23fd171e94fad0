"""Fixtures for the gRPC adapter tests: free loopback ports, a publisher that retries what was not
acknowledged, and subscribers that collect the egress stream (reconnecting across a restart)."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nothing listens on right now (the edgeplane binds them a moment later)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


#: reconnect quickly once a restarted pipeline listens again (gRPC's default backoff grows to minutes)
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 500)]


def _modules() -> tuple[Any, Any, Any]:
    grpc = pytest.importorskip("grpc")
    from byteor.adapters._grpc import byteor_edge_pb2, byteor_edge_pb2_grpc

    return grpc, byteor_edge_pb2, byteor_edge_pb2_grpc


def _metadata(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token is not None else []


class Publisher:
    """Publishes to a ``grpc://`` ingress with the generated stub."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.grpc, self.pb, pb_grpc = _modules()
        self.channel = self.grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.EdgeStub(self.channel)
        self.token = token

    def publish(self, payloads: Sequence[bytes], *, per_message: int = 100, timeout: float = 60.0,
                token: str | None = None) -> int:
        """One Publish call; the count its Ack carries (raises grpc.RpcError when not acknowledged)."""
        messages = [self.pb.Message(payloads=payloads[i:i + per_message]) for i in range(0, len(payloads), per_message)]
        ack = self.stub.Publish(iter(messages), timeout=timeout, wait_for_ready=True,
                                metadata=_metadata(token if token is not None else self.token))
        return int(ack.accepted)

    def publish_until_acked(self, payloads: Sequence[bytes], acked: list[bytes], deadline_s: float = 90.0,
                            **kw: Any) -> int:
        """Publish ``payloads`` again until a call is acknowledged (a restart in between); appends them
        to ``acked`` then. Returns how many calls failed first."""
        deadline = time.monotonic() + deadline_s
        failures = 0
        while True:
            try:
                n = self.publish(payloads, **kw)
            except self.grpc.RpcError:
                failures += 1
                assert time.monotonic() < deadline, "never acknowledged"
                time.sleep(0.2)
                continue
            assert n == len(payloads)
            acked.extend(payloads)
            return failures

    def close(self) -> None:
        self.channel.close()


class Subscriber:
    """Collects a ``grpc://`` egress in a thread; subscribes again whenever the stream breaks (the
    pipeline restarted) until :meth:`stop`. ``acked``: through SubscribeAcked, acknowledging each
    Message once it is recorded; ``leave_after=N`` (acked mode): acknowledge nothing and leave
    after receiving N payloads."""

    def __init__(self, port: int, token: str | None = None, *, acked: bool = False,
                 leave_after: int | None = None) -> None:
        self.grpc, self.pb, pb_grpc = _modules()
        from google.protobuf import empty_pb2

        self.channel = self.grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.EdgeStub(self.channel)
        self.empty = empty_pb2.Empty()
        self.token = token
        self.acked = acked or leave_after is not None
        self.leave_after = leave_after
        self.received: list[bytes] = []
        self.errors: list[Any] = []
        self.left = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._call: Any = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _acks(self, q: queue.Queue[int | None]) -> Iterator[Any]:
        while not self._stop.is_set():
            try:
                total = q.get(timeout=0.2)
            except queue.Empty:
                continue
            if total is None:
                return
            yield self.pb.Ack(accepted=total)

    def _main(self) -> None:
        while not self._stop.is_set():
            q: queue.Queue[int | None] = queue.Queue()
            md = _metadata(self.token)
            call = (self.stub.SubscribeAcked(self._acks(q), wait_for_ready=True, metadata=md) if self.acked
                    else self.stub.Subscribe(self.empty, wait_for_ready=True, metadata=md))
            self._call = call
            total = 0
            try:
                for message in call:
                    with self._lock:
                        self.received.extend(message.payloads)
                    total += len(message.payloads)
                    if self.leave_after is not None:
                        if total >= self.leave_after:
                            call.cancel()
                            self.left.set()
                            return
                    elif self.acked:
                        q.put(total)
            except self.grpc.RpcError as exc:
                self.errors.append(exc.code())
                if exc.code() == self.grpc.StatusCode.UNAUTHENTICATED:
                    return
            finally:
                q.put(None)
            self._stop.wait(0.1)

    def collect(self, want: int, timeout: float = 60.0) -> list[bytes]:
        """Everything received once at least ``want`` messages came (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < want and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            with contextlib.suppress(Exception):
                call.cancel()
        self._thread.join(5)
        self.channel.close()


@pytest.fixture
def grpc_clients() -> Iterator[tuple[Callable[..., Publisher], Callable[..., Subscriber]]]:
    """``(publisher(port, token=None), subscriber(port, token=None, acked=False, leave_after=None))`` factories;
    closed after the test."""
    made: list[Publisher | Subscriber] = []

    def publisher(port: int, token: str | None = None) -> Publisher:
        p = Publisher(port, token)
        made.append(p)
        return p

    def subscriber(port: int, token: str | None = None, **kw: Any) -> Subscriber:
        s = Subscriber(port, token, **kw)
        made.append(s)
        return s

    yield publisher, subscriber
    for m in made:
        if isinstance(m, Subscriber):
            m.stop()
        else:
            m.close()
