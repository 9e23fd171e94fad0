"""WebSocket through ``websockets``: ``ws://HOST:PORT/PATH``.

Ingress is a server on ``PATH`` (on 127.0.0.1 unless the URI names another host): every binary
frame a client sends is one message. Acknowledgement, like HTTP's ``202``, comes once the message
left egress and the sinks confirmed it (:mod:`._intake`): the server sends text frames
``{"acked": N}``, N counting this connection's messages acknowledged so far (cumulative, in order;
frames are coalesced, so N may jump). A message never acknowledged is the client's to send again
(at least once). While the intake is full (the ring is full) the server stops reading the
connection, so the client's sends block: backpressure instead of refusal. A text frame closes the
connection with 1003, a frame larger than the ring's slot with 1009 (``websockets``' ``max_size``),
a missing or wrong ``Authorization: Bearer`` token (``?token_env=NAME``) is refused at the
handshake with ``401``, another path with ``404``.

Egress is a client that sends each message as a binary frame to ``ws://HOST:PORT/PATH``: the
target is a service the operator runs, as with every other egress. :meth:`WsSink.flush` confirms
with a ping: pongs come back in order after every frame sent before the ping, so the peer's
WebSocket stack has read them all (not necessarily processed them: a peer that needs more must
acknowledge in its own protocol). After a lost connection the sink reconnects with backoff and
sends every message not yet confirmed again (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from .._errors import AdapterError, UsageError
from ..edges.base import Sink
from ..obs.events import emit
from ._base import LoopThread, Outage, require
from ._intake import IntakeSource
from ._uri import Endpoint
from .http import basic_auth, bearer_check, env_token, no_credentials

__all__ = ["WsSink", "WsSource"]


class _Conn:
    """One client connection's acknowledgement counter."""

    __slots__ = ("acked", "changed", "sent")

    def __init__(self) -> None:
        self.acked = 0
        self.sent = 0
        self.changed = asyncio.Event()

    def done(self, count: int, ok: bool) -> None:
        if ok:
            self.acked += count
            self.changed.set()


def _buffered(ws: Any) -> Any:
    """How many frames ``ws`` has read from its socket and not handed out yet (a callable), or None
    when this websockets version does not say: frames already there go to the intake together."""
    frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
    return frames.__len__ if frames is not None and hasattr(frames, "__len__") else None


class WsSource(IntakeSource):
    """The WebSocket ingress server (see the module docstring)."""

    def __init__(self, ep: Endpoint) -> None:
        super().__init__()
        ep.check_params(("token_env",))
        if len(ep.hosts) != 1:
            raise UsageError(f"{ep.label} {ep.display}: ws:// ingress listens on one HOST:PORT")
        self.ep = ep
        self.name = ep.display
        self.host, self.port = ep.hosts[0]
        self.path = "/" + ep.name
        no_credentials(ep)
        self.check = bearer_check(ep)
        self._thread: LoopThread | None = None
        self._server: Any = None
        self._conns: set[_Conn] = set()
        self.connections = 0
        self.refused = 0

    def open(self) -> None:
        server_mod = require("websockets.asyncio.server", "ws")
        sock, self._thread = self._listen(self.ep.display, self.host, self.port)

        async def start() -> Any:
            return await server_mod.serve(self._handler, sock=sock, process_request=self._process_request,
                                          max_size=self.slot_bytes, compression=None)

        try:
            self._server = self._thread.run(start(), self.ep.connect_timeout)
        except Exception as exc:
            sock.close()
            raise AdapterError(f"{self.ep.display}: the WebSocket server did not start: {exc}") from None
        self.port = sock.getsockname()[1]
        emit("adapter.listening", f"ingress {self.ep.display}: listening on ws://{self.host}:{self.port}{self.path}",
             adapter="ws", endpoint=self.ep.display, role="ingress", port=self.port)

    # -- the server's side (event loop thread) ------------------------------------------------------

    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path.split("?", 1)[0] != self.path:
            self.refused += 1
            return connection.respond(404, f"no endpoint at {request.path}; connect to {self.path}\n")
        if self.check is not None and not self.check(request.headers.get("Authorization", "").encode()):
            self.refused += 1
            resp = connection.respond(401, "missing or wrong bearer token\n")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return None

    async def _handler(self, ws: Any) -> None:
        intake = self.intake
        assert intake is not None
        self.connections += 1
        conn = _Conn()
        self._conns.add(conn)
        acker = asyncio.create_task(self._ack(ws, conn))
        buffered = _buffered(ws)
        most = min(512, intake.capacity)
        batch: list[bytes] = []
        try:
            async for message in ws:
                if isinstance(message, str):
                    await ws.close(1003, "binary frames only")
                    break
                batch.append(message)
                if buffered is not None and buffered() and len(batch) < most:
                    continue  # more frames are already here: hand them over together
                done = functools.partial(conn.done, len(batch))
                while not intake.offer(batch, done):
                    if intake.closed:
                        await ws.close(1001, "stopping")
                        return
                    await asyncio.sleep(0.002)  # full: stop reading, TCP pushes back on the client
                batch = []
        except Exception:  # a client that vanished mid-frame: what it was not acknowledged it sends again
            pass
        finally:
            acker.cancel()
            self._conns.discard(conn)

    @staticmethod
    async def _ack(ws: Any, conn: _Conn) -> None:
        while True:
            await conn.changed.wait()
            conn.changed.clear()
            if conn.acked != conn.sent:
                n = conn.acked
                await ws.send(json.dumps({"acked": n}))
                conn.sent = n

    def close(self) -> None:
        super().close()
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None and thread is not None:
            async def stop() -> None:
                # the last commit's acknowledgements go out before the connections close
                deadline = time.monotonic() + 2.0
                while any(c.sent < c.acked for c in self._conns) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                thread.run(stop(), 10)
        if thread is not None:
            thread.stop()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "adapter": "ws", "listen": f"{self.host}:{self.port}",
                               "messages": self.messages, "connections": self.connections, "refused": self.refused}
        if self.intake is not None:
            out.update(self.intake.describe())
        return out


# ==================================================================================================
# Egress
# ==================================================================================================


class WsSink(Sink):
    """A client that sends each message as a binary frame (see the module docstring)."""

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("token_env", "timeout"))
        if len(ep.hosts) != 1:
            raise UsageError(f"{ep.label} {ep.display}: ws:// takes one HOST:PORT")
        self.ep = ep
        self.name = ep.display
        self.timeout = ep.number("timeout", 10.0, minimum=0.1)
        self._token = env_token(ep)
        host, port = ep.hosts[0]
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"ws://{netloc}/{quote(ep.name)}"
        self.outage = Outage(ep, "egress")
        self._ws: Any = None
        self._unconfirmed: list[bytes] = []
        self._unsent = 0  # how many of the unconfirmed were not sent on the current connection yet
        self.sent = 0
        self.confirmed = 0

    def _connect(self) -> None:
        client = require("websockets.sync.client", "ws")
        auth = f"Bearer {self._token}" if self._token else basic_auth(self.ep)
        headers = {"Authorization": auth} if auth else None
        self._ws = client.connect(self.url, additional_headers=headers, open_timeout=self.ep.connect_timeout,
                                  compression=None, max_size=None, proxy=None, ping_interval=None,
                                  close_timeout=1)
        with contextlib.suppress(AttributeError, OSError):  # the flush's ping must not wait behind Nagle
            self._ws.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def open(self) -> None:
        require("websockets.sync.client", "ws")
        try:
            self._connect()
        except Exception as exc:
            raise AdapterError(f"{self.ep.display}: cannot connect to {self.url}: {self.ep.scrub(exc)}") from None
        self.outage.connected()

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        self._unconfirmed.extend(messages)
        self._unsent += len(messages)
        if self._unsent >= 1024:
            self._send(confirm=False)

    def flush(self) -> None:
        if self._unconfirmed:
            self._send(confirm=True)

    def _send(self, *, confirm: bool) -> None:
        while True:
            try:
                if self._ws is None:
                    self._connect()
                    self._unsent = len(self._unconfirmed)  # a new connection: everything unconfirmed again
                ws = self._ws
                start = len(self._unconfirmed) - self._unsent
                for m in self._unconfirmed[start:]:
                    ws.send(m)
                self.sent += self._unsent
                self._unsent = 0
                if confirm:
                    pong = ws.ping()
                    if not pong.wait(self.timeout):
                        raise TimeoutError(f"no pong within {self.timeout:g} s")
                    self.confirmed += len(self._unconfirmed)
                    self._unconfirmed = []
            except Exception as exc:
                ws, self._ws = self._ws, None
                if ws is not None:
                    with contextlib.suppress(Exception):
                        ws.close()
                time.sleep(self.outage.failed(exc))
                continue
            self.outage.ok()
            return

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "ws", "state": self.outage.state, "messages": self.sent,
                "confirmed": self.confirmed, "reconnects": self.outage.reconnects}
