"""HTTP: ``http://HOST:PORT/PATH`` as ingress serves ``POST PATH``; ``http://`` / ``https://`` as
egress POSTs batches to the URL.

Ingress is a plain ASGI app run by uvicorn (httptools parser) on the adapters' shared event loop
thread: uvicorn is already a dependency of the console, it is the server the ``http.raw`` benchmark
peer uses, and a bare ASGI callable (no framework routing) keeps the per-request work to parsing,
one hand-over and one response. A request's messages are answered ``202`` only once the session
committed them, that is once they went through the ring and left egress confirmed by the sinks
(:mod:`._intake`): a ``202`` survives a SIGKILL of the whole process group. Status codes:

* ``202`` every message of the body left egress; ``503`` + ``Retry-After`` the intake (bounded by
  the ring's capacity) is full or the run is stopping, nothing was taken;
* ``413`` the body is over ``max_body``, a message is over the ring's slot, or the request holds
  more messages than the ring; ``400`` a malformed ``len32`` body; ``415`` another content type;
* ``401`` a missing or wrong ``Authorization: Bearer`` token (``?token_env=NAME``, compared in
  constant time); ``404`` another path; ``405`` another method; ``GET /healthz`` is ``200``.

Nothing of a request answered ``4xx`` or ``503`` enters the pipeline, with one exception: a request
of more messages than one batch (half the ring) that the run's stop splits is answered ``503``
although its first part went out (a repeat on retry, never a loss).

Egress buffers messages and POSTs ``batch`` of them per request as NDJSON or ``len32``, each with an
``Idempotency-Key`` derived from the batch's position in this run's output and its content (a
retried batch carries the same key). ``5xx``, ``408``, ``429`` and connection errors are retried with
backoff (``Retry-After`` honoured up to 5 s) until ``retry_for``; any other status fails the run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import importlib.util
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from .._errors import AdapterError, UsageError
from ..edges.base import Sink
from ..edges.framing import FrameParser, encoder
from ..obs.events import emit
from ._base import LoopThread, Outage, require
from ._intake import IntakeSource
from ._uri import Endpoint

__all__ = ["HttpSink", "HttpSource", "basic_auth", "bearer_check", "env_token", "no_credentials"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_FRAMINGS = {b"application/octet-stream": "one", b"application/x-ndjson": "lines",
             b"application/x-byteor-len32": "len32"}
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


def env_token(ep: Endpoint) -> str | None:
    """The secret ``?token_env=NAME`` names (None without the parameter); exit 2 when unset."""
    name = ep.param("token_env")
    if name is None:
        return None
    token = os.environ.get(name, "") if name else ""
    if not token:
        raise UsageError(f"{ep.label} {ep.display}: ?token_env= names the variable {name!r}, which is unset or "
                         "empty")
    return token


def no_credentials(ep: Endpoint) -> None:
    """A server checks tokens (``?token_env=``); user and password in an ingress URI would be ignored."""
    # only the URI's own userinfo: BYTEOR_HTTP_* in the environment may be meant for an egress
    if "@" in urlsplit(ep.display).netloc:
        raise UsageError(f"{ep.label} {ep.display}: a {ep.scheme}:// ingress takes no user or password; "
                         "require a bearer token with ?token_env=NAME")


def basic_auth(ep: Endpoint) -> str | None:
    """``Authorization: Basic ...`` for the user and password of an egress URI (or the environment)."""
    if ep.username is None and ep.password is None:
        return None
    raw = f"{ep.username or ''}:{ep.password or ''}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def bearer_check(ep: Endpoint) -> Callable[[bytes | None], bool] | None:
    """``?token_env=NAME``: a check of an ``Authorization`` header value against ``Bearer $NAME``
    in constant time (both sides hashed first, so not even the length leaks); None without it."""
    token = env_token(ep)
    if token is None:
        return None
    want = hashlib.sha256(b"Bearer " + token.encode()).digest()

    def check(given: bytes | None) -> bool:
        return hmac.compare_digest(hashlib.sha256(given or b"").digest(), want)

    return check


class HttpSource(IntakeSource):
    """``POST PATH`` ingress (see the module docstring)."""

    def __init__(self, ep: Endpoint) -> None:
        super().__init__()
        if ep.scheme != "http":
            raise UsageError(f"{ep.label} {ep.display}: ingress serves http:// only; terminate TLS in front of it")
        ep.check_params(("token_env", "max_body", "retry_after", "max_clients"))
        if len(ep.hosts) != 1:
            raise UsageError(f"{ep.label} {ep.display}: http:// ingress listens on one HOST:PORT")
        self.ep = ep
        self.name = ep.display
        self.host, self.port = ep.hosts[0]
        self.path = "/" + ep.name
        self.max_body = ep.integer("max_body", 16 << 20, minimum=1)
        self.retry_after = str(ep.integer("retry_after", 1, minimum=0)).encode()
        self.max_clients = ep.integer("max_clients", 1000, minimum=1)
        no_credentials(ep)
        self.check = bearer_check(ep)
        self._thread: LoopThread | None = None
        self._server: Any = None
        self._serving: Any = None
        self.status: dict[int, int] = {}

    def open(self) -> None:
        uvicorn = require("uvicorn", "http")
        sock, self._thread = self._listen(self.ep.display, self.host, self.port)
        parser = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
        config = uvicorn.Config(self._app, interface="asgi3", lifespan="off", log_config=None, log_level="warning",
                                access_log=False, http=parser, ws="none", limit_concurrency=self.max_clients,
                                timeout_graceful_shutdown=5, server_header=False, date_header=False,
                                backlog=2048)
        self._server = uvicorn.Server(config)
        self._serving = self._thread.submit(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + self.ep.connect_timeout
        while not self._server.started:
            if self._serving.done() or time.monotonic() > deadline:
                sock.close()
                raise AdapterError(f"{self.ep.display}: the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = sock.getsockname()[1]
        emit("adapter.listening", f"ingress {self.ep.display}: listening on http://{self.host}:{self.port}"
             f"{self.path}", adapter="http", endpoint=self.ep.display, role="ingress", port=self.port)

    # -- the server's side (event loop thread) ------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            status, reason, extra = await self._handle(scope, receive)
        except Exception as exc:  # a bug must not become a traceback in the log: answer and count it
            status, reason, extra = 500, f"internal error: {type(exc).__name__}", []
        self.status[status] = self.status.get(status, 0) + 1
        body = reason.encode() + b"\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_TEXT, (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        path, method = scope["path"], scope["method"]
        if path == "/healthz" and method in ("GET", "HEAD"):
            return 200, "ok", []
        if path != self.path:
            return 404, f"no endpoint at {path}; POST to {self.path}", []
        if method != "POST":
            return 405, "only POST", [(b"allow", b"POST")]
        headers = dict(scope["headers"])
        if self.check is not None and not self.check(headers.get(b"authorization")):
            return 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]
        ctype = headers.get(b"content-type", b"application/octet-stream").split(b";", 1)[0].strip().lower()
        framing = _FRAMINGS.get(ctype)
        if framing is None:
            return 415, ("content type must be application/octet-stream, application/x-ndjson or "
                         "application/x-byteor-len32"), []
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, f"body of {int(length)} bytes is over the limit of {self.max_body} bytes", []
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 400, "client went away", []
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return 413, f"body is over the limit of {self.max_body} bytes", []
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        messages, problem = self._split(body, framing)
        if problem is not None:
            return problem
        if len(messages) > self.capacity:
            return 413, (f"{len(messages)} messages in one request, more than the ring holds "
                         f"({self.capacity}); send fewer per request"), []
        if not messages:
            return 202, "accepted 0 messages", []
        return await self._enqueue(messages)

    def _split(self, body: bytes, framing: str) -> tuple[list[bytes], tuple[int, str, list[Any]] | None]:
        slot = self.slot_bytes
        if framing == "one":
            if len(body) > slot:
                return [], (413, f"message of {len(body)} bytes is over the slot size ({slot} bytes)", [])
            return [body], None
        if framing == "lines":
            messages = body.split(b"\n")
            if messages[-1] == b"":
                messages.pop()
            for i, m in enumerate(messages):
                if len(m) > slot:
                    return [], (413, f"message {i} (line {i + 1}) is {len(m)} bytes, over the slot size "
                                     f"({slot} bytes)", [])
            return messages, None
        parser = FrameParser("len32", label="body", max_message_bytes=slot)
        messages = parser.feed(body)
        if parser.error is None:
            parser.finish()
        if parser.error is not None:
            code = 413 if "larger than the slot" in str(parser.error) else 400
            return [], (code, str(parser.error), [])
        return messages, None

    async def _enqueue(self, messages: list[bytes]) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        intake = self.intake
        assert intake is not None
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(ok: bool) -> None:
            if not fut.done():
                fut.set_result(ok)

        if not intake.offer(messages, done):
            why = "stopping" if intake.closed else "ring full"
            return 503, f"{why}; retry later", [(b"retry-after", self.retry_after)]
        if not await fut:
            return 503, "stopping before these messages left egress; retry later", [(b"retry-after", self.retry_after)]
        n = len(messages)
        return 202, f"accepted {n} message{'' if n == 1 else 's'}", []

    def close(self) -> None:
        super().close()
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                self._serving.result(10)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()

    def describe(self) -> dict[str, Any]:
        responses = {str(k): v for k, v in self.status.copy().items()}
        out: dict[str, Any] = {"name": self.name, "adapter": "http", "listen": f"{self.host}:{self.port}",
                               "messages": self.messages, "responses": responses}
        if self.intake is not None:
            out.update(self.intake.describe())
        return out


# ==================================================================================================
# Egress
# ==================================================================================================


class HttpSink(Sink):
    """Batched POSTs (see the module docstring)."""

    def __init__(self, ep: Endpoint) -> None:
        ep.check_params(("batch", "format", "timeout", "token_env"))
        if len(ep.hosts) != 1:
            raise UsageError(f"{ep.label} {ep.display}: {ep.scheme}:// takes one HOST:PORT")
        self.ep = ep
        self.name = ep.display
        self.batch = ep.integer("batch", 1000, minimum=1)
        self.format = ep.choice("format", ("ndjson", "len32"), "ndjson")
        self.timeout = ep.number("timeout", 10.0, minimum=0.1)
        self._token = env_token(ep)
        host, port = ep.hosts[0]
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"{ep.scheme}://{netloc}/{quote(ep.name)}"
        self._encode = encoder("lines" if self.format == "ndjson" else "len32")
        self._ctype = "application/x-ndjson" if self.format == "ndjson" else "application/x-byteor-len32"
        self.outage = Outage(ep, "egress")
        self._client: Any = None
        self._buf: list[bytes] = []
        self.sent = 0
        self.requests = 0
        self.retries = 0

    def open(self) -> None:
        httpx = require("httpx", self.ep.scheme)
        headers = {"content-type": self._ctype}
        auth = f"Bearer {self._token}" if self._token else basic_auth(self.ep)
        if auth:
            headers["authorization"] = auth
        self._client = httpx.Client(timeout=self.timeout, headers=headers)

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        self._buf.extend(messages)
        size = self.batch
        if len(self._buf) >= size:
            buf = self._buf
            whole = len(buf) - len(buf) % size
            for i in range(0, whole, size):
                self._post(buf[i:i + size])
            self._buf = buf[whole:]

    def flush(self) -> None:
        buf, self._buf = self._buf, []
        if buf:
            self._post(buf)

    def _post(self, batch: Sequence[bytes]) -> None:
        httpx = require("httpx", self.ep.scheme)
        body = self._encode(batch)
        if self.format == "ndjson" and body.count(b"\n") != len(batch):
            bad = next(i for i, m in enumerate(batch) if b"\n" in m)
            raise AdapterError(f"{self.ep.display}: message {self.sent + bad} contains a newline, which NDJSON "
                               "cannot carry; use ?format=len32")
        start = self.sent
        key = hashlib.sha256(b"%d:%d\n" % (start, len(batch)) + body).hexdigest()[:40]
        headers = {"idempotency-key": key}
        while True:
            try:
                resp = self._client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                self.retries += 1
                time.sleep(self.outage.failed(exc))
                continue
            status = resp.status_code
            if 200 <= status < 300:
                break
            first = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else ""
            if status >= 500 or status in (408, 429):
                self.retries += 1
                delay = self.outage.failed(AdapterError(f"HTTP {status} {first}".strip()))
                after = resp.headers.get("retry-after", "")
                if after.isdigit():
                    delay = max(delay, min(float(after), 5.0))
                time.sleep(delay)
                continue
            raise AdapterError(f"{self.ep.display}: POST answered {status} {self.ep.scrub(first)}".rstrip())
        self.outage.ok()
        self.sent += len(batch)
        self.requests += 1

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "adapter": "http", "state": self.outage.state, "messages": self.sent,
                "requests": self.requests, "retries": self.retries, "reconnects": self.outage.reconnects}
