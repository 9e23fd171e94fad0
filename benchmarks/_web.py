"""The HTTP and WebSocket rows of ``python -m benchmarks.adapters``.

Each server runs in its own process; the load generator (an aiohttp client pool) runs in this one,
on loopback, with the same clients, message size and duration against each:

* ``http.raw``: a minimal starlette app under uvicorn (same parser, same listening socket options)
  whose one route appends the request body to a list and answers 202;
* ``byteor.http``: ``byteor-edgeplane run --wait=block`` with ``--ingress=http://...`` (one
  identity stage in its own process, egress to /dev/null): every answer is a ``202``, given only
  after the message left egress;
* ``ws.raw``: a ``websockets`` server that appends every binary frame to a list;
* ``byteor.ws``: ``byteor-edgeplane run --wait=block`` with ``--ingress=ws://...``; a client counts
  a message done when the server's ``{"acked": N}`` frame covers it.

CPU s/M is the CPU the server used (its process and its children: byteor's stage processes) per
million requests or messages: on a shared machine a steadier comparison than the rates. HTTP rows:
requests (one 60-byte message each, ``application/octet-stream``) per second and the request
latency (p50/p99). WebSocket rows: messages per second from the first frame sent to the
last frame received (``ws.raw``: the server's answer to a final text frame) or acknowledged
(``byteor.ws``), and for ``byteor.ws`` the send-to-acknowledgement latency, which under this flood
(every client sends all its frames at once) is mostly the time a frame queues behind the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from benchmarks._common import Result

SPEC = """pipeline.name=webbench
pipeline.target=SingleRing
pipeline.ring.capacity=4096
pipeline.ring.slot_bytes=128
pipeline.stages.0.id=s0
pipeline.stages.0.op=identity
"""
MESSAGE = b"order-00000000-" + b"x" * 45

# the raw peers: the same listening socket (IPPROTO_TCP, so asyncio sets TCP_NODELAY) and parser
RAW_HTTP = textwrap.dedent("""
    import socket, sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    got = []
    async def ingest(request):
        got.append(await request.body())
        return Response(b"accepted\\n", status_code=202)
    app = Starlette(routes=[Route("/ingest", ingest, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(2048)
    config = uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False,
                            http="httptools", ws="none", server_header=False, date_header=False)
    print("listening", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
""")
RAW_WS = textwrap.dedent("""
    import asyncio, socket, sys
    from websockets.asyncio.server import serve
    got = []
    async def handler(ws):
        async for frame in ws:
            if isinstance(frame, str):
                await ws.send(str(len(got)))
            else:
                got.append(frame)
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(sys.argv[1])))
        sock.listen(2048)
        async with serve(handler, sock=sock, max_size=128, compression=None):
            print("listening", flush=True)
            await asyncio.Future()
    asyncio.run(main())
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """A server process, ready once it can be connected to."""

    def __init__(self, argv: list[str], port: int, workdir: Path) -> None:
        self.err = workdir / f"server-{uuid.uuid4().hex[:6]}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEOR_")}
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start: {self.err.read_text()[-300:]}") from None
                time.sleep(0.05)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the server and its child processes."""
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        ticks = 0
        for pid in pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _edgeplane(ingress: str, workdir: Path) -> list[str]:
    spec = workdir / "webbench.kv"
    spec.write_text(SPEC)
    exe = Path(sys.executable).parent / "byteor-edgeplane"
    # --wait=block: requests arrive a few at a time, and on a small machine stage processes that
    # spin while they wait take the CPU the server needs (docs/adapters.md, HTTP)
    return [str(exe), "run", str(spec), f"--ingress={ingress}", "--egress=file:/dev/null?format=raw",
            f"--ring-path=/dev/shm/byteor/bench-web-{uuid.uuid4().hex[:8]}", "--wait=block"]


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


# ==================================================================================================
# HTTP
# ==================================================================================================


async def _http_load(url: str, clients: int, seconds: float) -> tuple[float, list[float], dict[int, int]]:
    import aiohttp

    lat: list[float] = []
    status: dict[int, int] = {}
    headers = {"content-type": "application/octet-stream"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def warm() -> None:
            async with session.post(url, data=MESSAGE, headers=headers) as r:
                await r.read()

        await asyncio.gather(*(warm() for _ in range(clients)))  # connections open before the clock starts
        end = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                async with session.post(url, data=MESSAGE, headers=headers) as r:
                    await r.read()
                    status[r.status] = status.get(r.status, 0) + 1
                    if r.status == 202:
                        lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return len(lat) / elapsed, lat, status


Run = tuple[float, list[float], dict[int, int], float]


def http_once(server_argv: list[str], port: int, *, clients: int, seconds: float, workdir: Path) -> Run:
    """One round: rate, latencies, statuses, and the server's CPU seconds per million requests."""
    server = _Server(server_argv, port, workdir)
    try:
        cpu0 = server.cpu_s()
        rate, lat, status = asyncio.run(_http_load(f"http://127.0.0.1:{port}/ingest", clients, seconds))
        cpu = server.cpu_s() - cpu0
    finally:
        server.stop()
    return rate, lat, status, cpu * 1e6 / max(1, len(lat))


# ==================================================================================================
# WebSocket
# ==================================================================================================


async def _ws_load(url: str, connections: int, per_conn: int, acked_by_byteor: bool) -> tuple[float, list[float]]:
    from websockets.asyncio.client import connect

    lat: list[float] = []

    async def one(n: int, record: bool) -> None:
        async with connect(url, compression=None, max_size=None) as ws:
            sent_at: list[float] = []
            if acked_by_byteor:
                async def reader() -> None:
                    seen = 0
                    async for frame in ws:
                        acked = int(json.loads(frame)["acked"])
                        if record:
                            now = time.perf_counter()
                            lat.extend(now - sent_at[i] for i in range(seen, acked))
                        seen = acked
                        if acked >= n:
                            return

                task = asyncio.create_task(reader())
                for _ in range(n):
                    sent_at.append(time.perf_counter())
                    await ws.send(MESSAGE)
                await task
            else:
                for _ in range(n):
                    await ws.send(MESSAGE)
                await ws.send("count")
                await ws.recv()

    await one(500, False)  # the server, its pipeline and its first batches warm before the clock starts
    t0 = time.perf_counter()
    await asyncio.gather(*(one(per_conn, True) for _ in range(connections)))
    return connections * per_conn / (time.perf_counter() - t0), lat


def ws_once(server_argv: list[str], port: int, *, connections: int, per_conn: int, workdir: Path,
            acked: bool) -> Run:
    server = _Server(server_argv, port, workdir)
    try:
        cpu0 = server.cpu_s()
        rate, lat = asyncio.run(_ws_load(f"ws://127.0.0.1:{port}/ingest", connections, per_conn, acked))
        cpu = server.cpu_s() - cpu0
    finally:
        server.stop()
    return rate, lat, {}, cpu * 1e6 / (connections * per_conn)


def _row(name: str, runs: list[Run], note: str) -> Result:
    rates = sorted(r for r, _, _, _ in runs)
    lat = [x for _, ls, _, _ in runs for x in ls]
    cpu = sorted(c for _, _, _, c in runs)
    status: dict[int, int] = {}
    for _, _, st, _ in runs:
        for k, v in st.items():
            status[k] = status.get(k, 0) + v
    if not rates[-1]:
        return Result.not_measured(name, f"nothing acknowledged: {status}")
    p = {} if not lat else {"p50_us": _pct(lat, 0.5), "p99_us": _pct(lat, 0.99), "p999_us": _pct(lat, 0.999)}
    return Result(name, msgs_per_s=rates[len(rates) // 2], range=(rates[0], rates[-1]), note=note,
                  cpu_s_per_m=cpu[len(cpu) // 2], extra={"status": status} if status else {}, **p)


def web_rows(quick: bool, workdir: Path) -> list[Result]:
    """``http.raw``, ``byteor.http``, ``ws.raw``, ``byteor.ws``. The machine is shared, so each
    peer and its byteor row alternate, round after round (1 round with ``--quick``, else 3), and
    each row reports its median round with the spread."""
    rounds = 1 if quick else 3
    seconds = 1.0 if quick else 5.0
    clients = 50
    per_conn = 500 if quick else 5000
    runs: dict[str, list[Run]] = {k: [] for k in ("http.raw", "byteor.http", "ws.raw", "byteor.ws")}
    for _ in range(rounds):
        p = _free_port()
        runs["http.raw"].append(http_once([sys.executable, "-c", RAW_HTTP, str(p)], p, clients=clients,
                                          seconds=seconds, workdir=workdir))
        p = _free_port()
        runs["byteor.http"].append(http_once(_edgeplane(f"http://127.0.0.1:{p}/ingest", workdir), p,
                                             clients=clients, seconds=seconds, workdir=workdir))
    for _ in range(rounds):
        p = _free_port()
        runs["ws.raw"].append(ws_once([sys.executable, "-c", RAW_WS, str(p)], p, connections=8, per_conn=per_conn,
                                      workdir=workdir, acked=False))
        p = _free_port()
        runs["byteor.ws"].append(ws_once(_edgeplane(f"ws://127.0.0.1:{p}/ingest", workdir), p, connections=8,
                                         per_conn=per_conn, workdir=workdir, acked=True))
    notes = {"http.raw": f"starlette + uvicorn: append the body, 202 ({clients} clients)",
             "byteor.http": "edgeplane identity stage; 202 after egress",
             "ws.raw": "websockets server: append each frame (8 connections)",
             "byteor.ws": "edgeplane identity stage; ack after egress"}
    return [_row(name, r, notes[name]) for name, r in runs.items()]
