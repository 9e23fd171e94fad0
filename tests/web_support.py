"""Helpers of the HTTP and WebSocket adapter tests: the pipeline spec, free ports, an HTTP client
pool that records which messages were acknowledged, a WebSocket sender that does the same, and
the downstream services an egress talks to (an HTTP receiver that can answer 503 first, a
WebSocket receiver). The edgeplane under test always runs as its own process (``edge`` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CAPACITY = 512





def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_hex(*paths: Path) -> list[bytes]:
    """Messages of ``file:...?format=hex`` outputs (missing files are empty)."""
    out: list[bytes] = []
    for p in paths:
        if p.exists():
            out += [bytes.fromhex(line) for line in p.read_text().split()]
    return out


# --------------------------------------------------------------------------------------------------
# HTTP clients
# --------------------------------------------------------------------------------------------------


class Sender:
    """``clients`` concurrent HTTP clients posting NDJSON bodies from a shared list of requests
    (each a list of messages) until it is empty or :meth:`stop`; a request answered anything but
    ``202`` (or not answered) goes back to the list. Records the messages of every ``202``."""

    def __init__(self, url: str, requests: Iterable[list[bytes]], *, clients: int = 8,
                 token: str | None = None) -> None:
        self.url = url
        self.todo = list(requests)
        self.clients = clients
        self.headers = {"content-type": "application/x-ndjson"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self.acked: list[bytes] = []
        self.status: dict[int, int] = {}
        self.retry_after: set[str] = set()
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Sender:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 120.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the HTTP clients did not finish"

    def run(self) -> Sender:
        self.start()
        self.join()
        return self

    async def _main(self) -> None:
        import aiohttp

        # aiohttp, not httpx: httpx's pool spends milliseconds per request at 100 connections
        conn = aiohttp.TCPConnector(limit=self.clients)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._client(session) for _ in range(self.clients)))

    async def _client(self, session: Any) -> None:
        import aiohttp

        while not self._stop.is_set() and self.todo:
            req = self.todo.pop()
            t0 = time.monotonic()
            try:
                async with session.post(self.url, data=b"".join(m + b"\n" for m in req),
                                        headers=self.headers) as resp:
                    await resp.read()
                    status, retry_after = resp.status, resp.headers.get("retry-after")
            except (TimeoutError, aiohttp.ClientError):
                self.todo.insert(0, req)
                await asyncio.sleep(0.05)
                continue
            self.status[status] = self.status.get(status, 0) + 1
            if status == 202:
                self.latencies.append(time.monotonic() - t0)
                self.acked += req
                continue
            if retry_after is not None:
                self.retry_after.add(retry_after)
            self.todo.insert(0, req)
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------------------------
# WebSocket clients
# --------------------------------------------------------------------------------------------------


class WsSender:
    """``connections`` WebSocket clients, each sending its share of ``messages`` as binary frames
    and reading the ``{"acked": N}`` frames; :attr:`acked` is every message acknowledged."""

    def __init__(self, url: str, messages: list[bytes], *, connections: int = 4, headers: dict[str, str] | None = None,
                 rate_pause: float = 0.0) -> None:
        self.url = url
        self.shares = [messages[i::connections] for i in range(connections)]
        self.headers = headers
        self.rate_pause = rate_pause
        self.acked: list[bytes] = []
        self.errors: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self) -> WsSender:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 120.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the WebSocket clients did not finish"

    async def _main(self) -> None:
        await asyncio.gather(*(self._one(share) for share in self.shares))

    async def _one(self, share: list[bytes]) -> None:
        from websockets.asyncio.client import connect

        acked = 0
        try:
            async with connect(self.url, additional_headers=self.headers, max_size=None, compression=None) as ws:
                async def reader() -> None:
                    nonlocal acked
                    async for frame in ws:
                        acked = max(acked, int(json.loads(frame)["acked"]))
                        if acked >= len(share):
                            return

                task = asyncio.create_task(reader())
                for i, m in enumerate(share):
                    await ws.send(m)
                    if self.rate_pause and i % 50 == 49:
                        await asyncio.sleep(self.rate_pause)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 60)
        except Exception as exc:  # a killed server ends the connection: what was acked is what counts
            self.errors.append(repr(exc))
        self.acked += share[:acked]


# --------------------------------------------------------------------------------------------------
# Downstream services for the egress tests
# --------------------------------------------------------------------------------------------------


class HttpReceiver:
    """An HTTP server that records every POST (body, headers) and answers ``503`` to the first
    ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[bytes, dict[str, str]]] = []
        self.failed: list[dict[str, str]] = []
        self.fail_left = fail_first
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if owner.fail_left > 0:
                    owner.fail_left -= 1
                    owner.failed.append(headers)
                    self._answer(503, b"busy\n")
                    return
                owner.posts.append((body, headers))
                self._answer(200, b"ok\n")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def messages(self) -> list[bytes]:
        out: list[bytes] = []
        for body, headers in self.posts:
            assert headers["content-type"] == "application/x-ndjson"
            out += body.split(b"\n")[:-1]
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WsReceiver:
    """A WebSocket server that records every binary frame."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.frames: list[bytes] = []
        self.paths: set[str] = set()

        def handler(ws: Any) -> None:
            self.paths.add(ws.request.path)
            for frame in ws:
                self.frames.append(frame)

        self.server = serve(handler, "127.0.0.1", 0, compression=None, max_size=None)
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def http_receiver() -> Iterator[Any]:
    made: list[HttpReceiver] = []

    def make(fail_first: int = 0) -> HttpReceiver:
        r = HttpReceiver(fail_first)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def ws_receiver() -> Iterator[WsReceiver]:
    r = WsReceiver()
    yield r
    r.close()


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children, in KiB (the edgeplane runs its stages as children)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total
