"""``python -m benchmarks.ring``: byteor's shared-memory ring against every Python IPC peer.

One run measures, on 64-byte messages sent from this process to a consumer process:

* throughput (median of 3 runs, with the range) of ``py_call_limit`` (a loop calling ``len(msg)``,
  the same loop shape as the byteor producer: Python's own limit for one call per message),
  ``mp.Queue``, ``mp.Pipe``, ``faster_fifo``, ``pyzmq`` (ipc://), ``iceoryx2`` (its Python package),
  ``py_ring`` (a pure-Python shared-memory ring, below), ``c_ring`` (a plain C ring compiled here
  with gcc: the machine's limit) and byteor: ``byteor.publish`` (one call per message into a builtin
  stage process), ``byteor.publish_many`` (batches of 256) and ``byteor.chain4`` (four add_u8 stage
  processes in a chain);
* the same with a Python stage as the consumer: ``py_fn_limit`` (a Python loop calling the no-op
  one-argument stage function ``noop_stage`` per message, sampled through the run like
  ``py_call_limit``: Python's own limit for one stage call per message), ``<peer>.py_consumer`` (the
  peer's consumer process calls ``noop_stage`` on every message it receives), ``byteor.py_stage``
  (``noop_stage`` as a map stage in its own process, run by the native stage loop
  ``Ring.run_stage``, fed by ``publish_many``, counted by a native sink process),
  ``byteor.py_stage_inplace`` (the in-place form, ``noop_stage_inplace``) and ``byteor.chain4_py``
  (four ``noop_stage`` processes in a chain, then the sink);
* round-trip latency at a fixed offered rate, open loop for every row: message i is due at
  t0 + i/rate and its latency is measured from that due time, not from when it was actually sent,
  so a stalled sender cannot hide queueing delay (coordinated omission). Peers echo through a
  Python child; byteor's round trip is publish -> stage process (native, GIL-free) -> its gating
  cell -> back, polled by this process like the peers' replies; ``c_ring`` does the same in C;
* CPU seconds per million messages (producer + consumer) and, for byteor, for each wait strategy,
  plus each strategy's CPU use while idle; peak RSS (producer + consumer).

Each row uses one wait strategy (the byteor rows name theirs: the stage's, and the round trip's).
Goals (ratios within the run, printed at the end): ``byteor.publish`` >= 60% of ``py_call_limit``,
``byteor.py_stage`` >= 40% of ``py_fn_limit`` and >= 20x ``mp.Queue.py_consumer``, and the ones below.

``--quick`` is a smoke run of seconds (CI); ``--json PATH`` writes
``{"machine": {...}, "results": [{"name", "msgs_per_s", "p50_us", "p99_us", "p999_us", "cpu_s_per_m",
"rss_mb"}, ...]}`` with ``null`` where a figure is not measured (the row's note says why).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import mmap
import multiprocessing as mp
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventT
from typing import Any

from benchmarks._common import (
    Meter,
    Result,
    bench_dir,
    markdown_table,
    parser,
    percentiles_us,
    print_table,
    repeat,
    write_json,
)
from benchmarks.obs import overhead_json
from byteor import _native as N

MSG_BYTES = 64
MSG = bytes(range(MSG_BYTES))
BATCH = 256
#: ring capacity for byteor and c_ring alike: deep enough that a stage descheduled for a while on a
#: busy 2-core machine does not stall the producer on a full ring
CAPACITY = 65536
#: 256 distinct 64-byte messages; every per-message producer loop (byteor, py_ring, the queues and
#: py_call_limit alike) iterates over this list: `for m in BLOCK: f(m)`, repeated
BLOCK = [bytes((i + j) % 256 for j in range(MSG_BYTES)) for i in range(BATCH)]
CTX = mp.get_context("fork")  # consumers inherit the imported modules; nothing is pickled
HASH = hashlib.sha256(b"benchmarks.ring").digest()
RATIO_TO = ["mp.Queue", "py_ring", "c_ring", "py_call_limit", "py_fn_limit"]
WAITS = {"spin": N.WAIT_SPIN, "yield": N.WAIT_YIELD, "backoff": N.WAIT_BACKOFF, "block": N.WAIT_BLOCK}


@dataclass(frozen=True)
class Sizes:
    fast: int      # byteor and py_call_limit messages per run
    many: int      # byteor.publish_many / c_ring messages per run
    slow: int      # Python IPC peers messages per run
    lat_n: int     # latency samples
    lat_rate: int  # offered rate, messages per second
    runs: int
    flat_n: int    # messages of the memory-flatness run (0: skipped)
    lat_runs: int  # c_ring and byteor latency runs; the one with the median p50 is reported


QUICK = Sizes(fast=300_000, many=2_000_000, slow=20_000, lat_n=2_000, lat_rate=5_000, runs=3, flat_n=0,
              lat_runs=1)
FULL = Sizes(fast=8_000_000, many=40_000_000, slow=300_000, lat_n=40_000, lat_rate=20_000, runs=3,
             flat_n=10_000_000, lat_runs=3)


# ------------------------------------------------------------------------------ child-side helpers

def _watch_parent() -> None:
    """Children exit if the benchmark process dies (no orphan spinning on a core)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


@dataclass
class Shared:
    """What a consumer child reports back."""

    ready: EventT
    done_at: Any   # multiprocessing.Value('d'): CLOCK_MONOTONIC seconds when the last message arrived
    count: Any     # multiprocessing.Value('q'): messages received
    rss: Any       # multiprocessing.Value('d'): the child's peak RSS, MiB

    @classmethod
    def make(cls) -> Shared:
        return cls(CTX.Event(), CTX.Value("d", 0.0), CTX.Value("q", 0), CTX.Value("d", 0.0))

    def finish(self, count: int) -> None:
        self.done_at.value = time.monotonic()
        self.count.value = count
        self.rss.value = _rss_mb("VmHWM")


# ------------------------------------------------------------------------- throughput harness

def pair_throughput(consumer: Callable[..., None], cargs: tuple[Any, ...], produce: Callable[[int], None],
                    n: int, *, setup: Callable[[], Any] | None = None) -> tuple[float, float, float]:
    """Start ``consumer(shared, n, *cargs)`` in a child, wait until it is ready, run ``produce(n)``
    here, join. Returns (msgs/s, CPU s per million messages, RSS MiB producer + consumer)."""
    shared = Shared.make()
    proc = CTX.Process(target=_child_main, args=(consumer, shared, n, cargs), daemon=True)
    with Meter() as meter:
        proc.start()
        if not shared.ready.wait(60):
            proc.kill()
            raise RuntimeError(f"{consumer.__name__}: consumer did not start")
        t0 = time.monotonic()
        produce(n)
        proc.join(300)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise RuntimeError(f"{consumer.__name__}: consumer did not finish")
    if proc.exitcode != 0 or shared.count.value != n:
        raise RuntimeError(f"{consumer.__name__}: consumer exit {proc.exitcode}, got {shared.count.value}/{n}")
    elapsed = shared.done_at.value - t0
    return n / elapsed, meter.cpu_s / n * 1e6, _rss_mb() + shared.rss.value


def _child_main(consumer: Callable[..., None], shared: Shared, n: int, cargs: tuple[Any, ...]) -> None:
    _watch_parent()
    consumer(shared, n, *cargs)


def measure(name: str, runs: int, one: Callable[[], tuple[float, float, float]]) -> Result:
    cpu: list[float] = []
    rss: list[float] = []

    def run() -> float:
        rate, c, r = one()
        cpu.append(c)
        rss.append(r)
        return rate

    stat = repeat(run, runs)
    return Result(name=name, msgs_per_s=stat.median, range=(stat.lo, stat.hi),
                  cpu_s_per_m=sorted(cpu)[len(cpu) // 2], rss_mb=max(rss))


# ---------------------------------------------------------------------------- latency harness

def open_loop(send: Callable[[int], None], poll: Callable[[], int], n: int, rate: int, *,
              wait_reply: Callable[[int], int] | None = None) -> list[int]:
    """Send message i at t0 + i/rate while polling replies, which arrive in order. Returns latencies
    in ns from each message's *due* time to its reply (a late send cannot hide its delay).

    ``wait_reply(budget_ns)``, when given, replaces ``poll`` while a reply is outstanding: it waits
    in the transport's own wait, never longer than until the next message is due, and returns the
    replies received; sending stays on schedule either way."""
    period = 1_000_000_000 / rate
    mono = time.monotonic_ns
    t0 = mono() + 2_000_000
    lat = [0] * n
    sent = got = 0
    deadline = t0 + int(n * period) + 60_000_000_000
    while got < n:
        if got == sent and sent < n:  # nothing in flight: wait for the due time in a tight loop
            due = t0 + sent * period
            while mono() < due:
                pass
        now = mono()
        budget = 10_000_000
        if sent < n and now >= t0 + sent * period:
            send(sent)
            sent += 1
            budget = int(t0 + sent * period) - now  # computed before the reply can be there
        k = wait_reply(max(0, budget)) if wait_reply is not None and got < sent else poll()
        if k:
            now = mono()
            for j in range(got, got + k):
                lat[j] = now - int(t0 + j * period)
            got += k
        elif now > deadline:
            raise RuntimeError(f"latency run stuck at {got}/{n} replies")
    return lat


def with_latency(row: Result, samples: list[int]) -> Result:
    row.p50_us, row.p99_us, row.p999_us, mx = percentiles_us(samples)
    row.extra["max_us"] = round(mx, 1)
    return row


def echo_latency(echo: Callable[..., None], eargs: tuple[Any, ...], send: Callable[[int], None],
                 poll: Callable[[], int], sizes: Sizes) -> list[int]:
    shared = Shared.make()
    proc = CTX.Process(target=_child_main, args=(echo, shared, sizes.lat_n, eargs), daemon=True)
    proc.start()
    try:
        if not shared.ready.wait(60):
            raise RuntimeError(f"{echo.__name__}: echo did not start")
        return open_loop(send, poll, sizes.lat_n, sizes.lat_rate)
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()


# ================================================================================== the peers

# ---- py_call_limit ----------------------------------------------------------------------------

def per_message(f: Callable[[bytes], object], n: int) -> None:
    """The producer loop every per-message row uses: one call per message over BLOCK."""
    block = BLOCK
    for _ in range(n // len(block)):
        for m in block:
            f(m)
    for m in block[: n % len(block)]:
        f(m)


def noop_stage(msg: bytes) -> bytes:
    """The Python stage of every ``*.py_consumer`` / ``byteor.py_stage`` row and of ``py_fn_limit``: a
    one-argument map function that keeps the message."""
    return msg


def noop_stage_inplace(slot: memoryview, length: int) -> int:
    """``noop_stage`` in the in-place form (``byteor.py_stage_inplace``)."""
    return length


class Baseline:
    """A loop calling ``fn`` once per message over BLOCK (``py_call_limit``: ``len``; ``py_fn_limit``:
    ``noop_stage``), sampled once before every other step of the run (not 3 times in a row), so
    the baseline sees the same mix of quiet and busy moments as the rows compared with it."""

    def __init__(self, name: str, fn: Callable[[bytes], object], sizes: Sizes, what: str) -> None:
        self.name = name
        self.fn = fn
        self.sizes = sizes
        self.what = what
        self.samples: list[tuple[float, float, float]] = []

    def sample(self) -> None:
        n = self.sizes.fast
        with Meter() as m:
            t = time.perf_counter()
            per_message(self.fn, n)
            dt = time.perf_counter() - t
        self.samples.append((n / dt, m.cpu_s / n * 1e6, _rss_mb()))

    def result(self) -> Result:
        rates = sorted(x[0] for x in self.samples)
        cpus = sorted(x[1] for x in self.samples)
        mid = len(rates) // 2
        return Result(self.name, msgs_per_s=rates[mid], range=(rates[0], rates[-1]), cpu_s_per_m=cpus[mid],
                      rss_mb=max(x[2] for x in self.samples),
                      note=f"{self.what} per message, same loop as the producers, no IPC; median of {len(rates)} "
                           "samples spread over the run")


# ---- multiprocessing.Queue -------------------------------------------------------------------

def _mpq_consumer(shared: Shared, n: int, q: Any, fn: Callable[[bytes], object] | None = None) -> None:
    shared.ready.set()
    get = q.get
    if fn is None:
        for _ in range(n):
            get()
    else:
        for _ in range(n):
            fn(get())
    shared.finish(n)


def _mpq_echo(shared: Shared, n: int, q_in: Any, q_out: Any) -> None:
    shared.ready.set()
    for _ in range(n):
        q_out.put(q_in.get())


def py_consumer_row(name: str, sizes: Sizes, one: Callable[[Callable[[bytes], object] | None],
                                                            tuple[float, float, float]]) -> Result:
    """``<peer>.py_consumer``: the peer's throughput row with ``noop_stage`` called on every message."""
    row = measure(f"{name}.py_consumer", sizes.runs, lambda: one(noop_stage))
    row.note = "the consumer calls noop_stage(msg) on every message"
    return row


def bench_mp_queue(sizes: Sizes) -> list[Result]:
    def one(fn: Callable[[bytes], object] | None = None) -> tuple[float, float, float]:
        q = CTX.Queue(maxsize=4096)

        def produce(n: int) -> None:
            per_message(q.put, n)

        try:
            return pair_throughput(_mpq_consumer, (q, fn), produce, sizes.slow)
        finally:
            q.close()
            q.join_thread()

    row = measure("mp.Queue", sizes.runs, one)
    py_row = py_consumer_row("mp.Queue", sizes, one)
    import queue

    q_in, q_out = CTX.Queue(), CTX.Queue()

    def poll() -> int:
        k = 0
        while True:
            try:
                q_out.get_nowait()
            except queue.Empty:
                return k
            k += 1

    lat = echo_latency(_mpq_echo, (q_in, q_out), lambda i: q_in.put(MSG), poll, sizes)
    for q in (q_in, q_out):
        q.close()
        q.join_thread()
    return [with_latency(row, lat), py_row]


# ---- multiprocessing.Pipe --------------------------------------------------------------------

def _pipe_consumer(shared: Shared, n: int, r: Any, fn: Callable[[bytes], object] | None = None) -> None:
    shared.ready.set()
    recv = r.recv_bytes
    if fn is None:
        for _ in range(n):
            recv()
    else:
        for _ in range(n):
            fn(recv())
    shared.finish(n)


def _pipe_echo(shared: Shared, n: int, conn: Any) -> None:
    shared.ready.set()
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def bench_mp_pipe(sizes: Sizes) -> list[Result]:
    def one(fn: Callable[[bytes], object] | None = None) -> tuple[float, float, float]:
        r, w = CTX.Pipe(duplex=False)

        def produce(n: int) -> None:
            per_message(w.send_bytes, n)

        try:
            return pair_throughput(_pipe_consumer, (r, fn), produce, sizes.slow)
        finally:
            r.close()
            w.close()

    row = measure("mp.Pipe", sizes.runs, one)
    py_row = py_consumer_row("mp.Pipe", sizes, one)
    a, b = CTX.Pipe(duplex=True)

    def poll() -> int:
        k = 0
        while a.poll(0):
            a.recv_bytes()
            k += 1
        return k

    lat = echo_latency(_pipe_echo, (b,), lambda i: a.send_bytes(MSG), poll, sizes)
    a.close()
    b.close()
    return [with_latency(row, lat), py_row]


# ---- faster-fifo -----------------------------------------------------------------------------

def _ff_consumer(shared: Shared, n: int, q: Any, fn: Callable[[bytes], object] | None = None) -> None:
    shared.ready.set()
    got = 0
    while got < n:
        batch = q.get_many(max_messages_to_get=1024, timeout=30)
        if fn is not None:
            for m in batch:
                fn(m)
        got += len(batch)
    shared.finish(got)


def _ff_echo(shared: Shared, n: int, q_in: Any, q_out: Any) -> None:
    shared.ready.set()
    for _ in range(n):
        q_out.put(q_in.get(timeout=30), timeout=30)


def bench_faster_fifo(sizes: Sizes) -> Result | list[Result]:
    try:
        import faster_fifo
    except ImportError as exc:
        return Result.not_measured("faster_fifo", f"cannot import faster_fifo ({exc}); pip install 'byteor[bench]'")

    def one(fn: Callable[[bytes], object] | None = None) -> tuple[float, float, float]:
        q = faster_fifo.Queue(max_size_bytes=4 * 1024 * 1024)

        def produce(n: int) -> None:
            per_message(functools.partial(q.put, timeout=30), n)

        try:
            return pair_throughput(_ff_consumer, (q, fn), produce, sizes.slow)
        finally:
            q.close()

    row = measure("faster_fifo", sizes.runs, one)
    py_row = py_consumer_row("faster_fifo", sizes, one)
    q_in, q_out = faster_fifo.Queue(), faster_fifo.Queue()
    import queue

    def poll() -> int:
        try:
            return len(q_out.get_many(block=False))
        except queue.Empty:
            return 0

    lat = echo_latency(_ff_echo, (q_in, q_out), lambda i: q_in.put(MSG), poll, sizes)
    return [with_latency(row, lat), py_row]


# ---- pyzmq ipc:// ----------------------------------------------------------------------------

def _zmq_consumer(shared: Shared, n: int, addr: str, fn: Callable[[bytes], object] | None = None) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.connect(addr)
    shared.ready.set()
    recv = s.recv
    if fn is None:
        for _ in range(n):
            recv(copy=True)
    else:
        for _ in range(n):
            fn(recv(copy=True))
    shared.finish(n)
    s.close(0)
    ctx.term()


def _zmq_echo(shared: Shared, n: int, addr: str) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.connect(addr)
    shared.ready.set()
    for _ in range(n):
        s.send(s.recv())
    s.close(0)
    ctx.term()


def bench_pyzmq(sizes: Sizes) -> Result | list[Result]:
    try:
        import zmq
    except ImportError as exc:
        return Result.not_measured("pyzmq", f"cannot import zmq ({exc}); pip install 'byteor[bench]'")

    def one(fn: Callable[[bytes], object] | None = None) -> tuple[float, float, float]:
        addr = f"ipc://{bench_dir()}/zmq-{time.monotonic_ns()}"
        ctx = zmq.Context()
        s = ctx.socket(zmq.PUSH)
        s.bind(addr)

        def produce(n: int) -> None:
            per_message(s.send, n)

        try:
            return pair_throughput(_zmq_consumer, (addr, fn), produce, sizes.slow)
        finally:
            s.close(0)
            ctx.term()

    row = measure("pyzmq", sizes.runs, one)
    py_row = py_consumer_row("pyzmq", sizes, one)
    addr = f"ipc://{bench_dir()}/zmq-lat"
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.bind(addr)

    def poll() -> int:
        k = 0
        while True:
            try:
                s.recv(zmq.NOBLOCK)
            except zmq.Again:
                return k
            k += 1

    lat = echo_latency(_zmq_echo, (addr,), lambda i: s.send(MSG), poll, sizes)
    s.close(0)
    ctx.term()
    return [with_latency(row, lat), py_row]


# ---- iceoryx2 --------------------------------------------------------------------------------

def _iox_service(iox2: Any, node: Any, name: str) -> Any:
    return (node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(ctypes.c_uint8 * MSG_BYTES)
            .enable_safe_overflow(False).subscriber_max_buffer_size(1024).history_size(0).open_or_create())


def _iox_consumer(shared: Shared, n: int, name: str, fn: Callable[[bytes], object] | None = None) -> None:
    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    sub = _iox_service(iox2, node, name).subscriber_builder().create()
    shared.ready.set()
    got = 0
    receive = sub.receive
    call = fn if fn is not None else len
    while got < n:
        sample = receive()
        if sample is not None:
            call(bytes(sample.payload().contents))
            del sample
            got += 1
    shared.finish(got)
    del sub, node  # drop the ports and the node: iceoryx2 removes their shared-memory files


def _iox_echo(shared: Shared, n: int, name_in: str, name_out: str) -> None:
    import iceoryx2 as iox2

    iox2.set_log_level(iox2.LogLevel.Error)
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    sub = _iox_service(iox2, node, name_in).subscriber_builder().create()
    pub = (_iox_service(iox2, node, name_out).publisher_builder()
           .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create())
    payload = (ctypes.c_uint8 * MSG_BYTES)()
    shared.ready.set()
    done = 0
    while done < n:
        sample = sub.receive()
        if sample is None:
            continue
        ctypes.memmove(payload, bytes(sample.payload().contents), MSG_BYTES)
        del sample
        pub.loan_uninit().write_payload(payload).send()
        done += 1
    del sub, pub, node


def bench_iceoryx2(sizes: Sizes) -> Result | list[Result]:
    try:
        import iceoryx2 as iox2
    except ImportError as exc:
        return Result.not_measured("iceoryx2", f"cannot import iceoryx2 ({exc}); pip install 'byteor[bench]'")
    iox2.set_log_level(iox2.LogLevel.Error)
    payload = (ctypes.c_uint8 * MSG_BYTES)(*MSG)

    def one(fn: Callable[[bytes], object] | None = None) -> tuple[float, float, float]:
        name = f"byteor/bench/tput-{os.getpid()}-{time.monotonic_ns()}"
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        svc = _iox_service(iox2, node, name)
        pub = svc.publisher_builder().backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create()

        def produce(n: int) -> None:
            loan = pub.loan_uninit
            for _ in range(n):
                loan().write_payload(payload).send()

        def produce_when_connected(n: int) -> None:
            _iox_wait_subscriber(svc)  # a sample sent before the subscriber connects would be missed
            produce(n)

        return pair_throughput(_iox_consumer, (name, fn), produce_when_connected, sizes.slow)

    row = measure("iceoryx2", sizes.runs, one)
    py_row = py_consumer_row("iceoryx2", sizes, one)
    name_in = f"byteor/bench/ping-{os.getpid()}"
    name_out = f"byteor/bench/pong-{os.getpid()}"
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    svc_in = _iox_service(iox2, node, name_in)
    pub = svc_in.publisher_builder().backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered).create()
    sub = _iox_service(iox2, node, name_out).subscriber_builder().create()

    def poll() -> int:
        k = 0
        while True:
            sample = sub.receive()
            if sample is None:
                return k
            del sample
            k += 1

    sent_first = [False]

    def send(i: int) -> None:
        if not sent_first[0]:
            _iox_wait_subscriber(svc_in)
            sent_first[0] = True
        pub.loan_uninit().write_payload(payload).send()

    lat = echo_latency(_iox_echo, (name_in, name_out), send, poll, sizes)
    return [with_latency(row, lat), py_row]


def _iox_wait_subscriber(svc: Any) -> None:
    deadline = time.monotonic() + 30
    while svc.dynamic_config.number_of_subscribers < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("iceoryx2 subscriber never connected")
        time.sleep(0.001)


# ---- py_ring: a pure-Python shared-memory ring -------------------------------------------------

class PyRing:
    """A single-producer single-consumer ring in an mmap, written in Python only (the baseline a
    Python programmer would write without a C extension). Layout: head u64 at 0 (producer), tail
    u64 at 64 (consumer), slots from 128: u32 length + payload, stride rounded to 8."""

    def __init__(self, path: str, capacity: int = CAPACITY, slot: int = MSG_BYTES, create: bool = False) -> None:
        self.capacity, self.mask, self.stride = capacity, capacity - 1, (4 + slot + 7) // 8 * 8
        size = 128 + capacity * self.stride
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.head = self.tail_cache = 0
        self.tail = 0

    def publish(self, msg: bytes) -> None:
        head = self.head
        while head - self.tail_cache >= self.capacity:
            self.tail_cache = struct.unpack_from("<Q", self.mm, 64)[0]
        off = 128 + (head & self.mask) * self.stride
        n = len(msg)
        struct.pack_into("<I", self.mm, off, n)
        self.mm[off + 4:off + 4 + n] = msg
        self.head = head + 1
        struct.pack_into("<Q", self.mm, 0, head + 1)

    def poll(self) -> list[bytes]:
        """Every message available now (possibly none); releases them."""
        head = struct.unpack_from("<Q", self.mm, 0)[0]
        out = []
        for s in range(self.tail, head):
            off = 128 + (s & self.mask) * self.stride
            n = struct.unpack_from("<I", self.mm, off)[0]
            out.append(self.mm[off + 4:off + 4 + n])
        if out:
            self.tail = head
            struct.pack_into("<Q", self.mm, 64, head)
        return out


def _pyring_consumer(shared: Shared, n: int, path: str, fn: Callable[[bytes], object] | None = None) -> None:
    ring = PyRing(path)
    shared.ready.set()
    got = 0
    while got < n:
        batch = ring.poll()
        if fn is not None:
            for m in batch:
                fn(m)
        got += len(batch)
    shared.finish(got)


def _pyring_echo(shared: Shared, n: int, path_in: str, path_out: str) -> None:
    rin, rout = PyRing(path_in), PyRing(path_out)
    shared.ready.set()
    done = 0
    while done < n:
        for m in rin.poll():
            rout.publish(m)
            done += 1


def bench_py_ring(sizes: Sizes) -> list[Result]:
    def one(fn: Callable[[bytes], object] | None = None) -> tuple[float, float, float]:
        path = os.path.join(bench_dir(), f"pyring-{time.monotonic_ns()}")
        ring = PyRing(path, create=True)

        def produce(n: int) -> None:
            per_message(ring.publish, n)

        try:
            return pair_throughput(_pyring_consumer, (path, fn), produce, sizes.slow * 3)
        finally:
            os.unlink(path)

    row = measure("py_ring", sizes.runs, one)
    py_row = py_consumer_row("py_ring", sizes, one)
    p_in, p_out = os.path.join(bench_dir(), "pyring-ping"), os.path.join(bench_dir(), "pyring-pong")
    rin, rout = PyRing(p_in, create=True), PyRing(p_out, create=True)
    lat = echo_latency(_pyring_echo, (p_in, p_out), lambda i: rin.publish(MSG), lambda: len(rout.poll()), sizes)
    return [with_latency(row, lat), py_row]


# ---- c_ring: the machine's limit -----------------------------------------------------------------

C_RING = r"""
/* A plain SPSC ring between two processes (fork + shared anonymous mapping): 64-byte messages with
 * a length word, per-message store-release of the head, consumer batches up to the head and
 * releases its tail per batch, spin waits. What the hardware allows with no Python at all. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP 65536
#define MSG 64
#define STRIDE 72
typedef struct {
    _Alignas(64) _Atomic int64_t head;
    _Alignas(64) _Atomic int64_t tail;
    _Alignas(64) _Atomic int64_t start;
    _Alignas(64) unsigned char slots[CAP * STRIDE];
} ring_t;

static int64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static double cpu_s(int who) {
    struct rusage ru; getrusage(who, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b; return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int lat = strcmp(argv[1], "lat") == 0;
    int64_t n = atoll(argv[2]);
    double rate = argc > 3 ? atof(argv[3]) : 0;
    ring_t *r = mmap(NULL, sizeof(ring_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (r == MAP_FAILED) return 1;
    atomic_store(&r->head, 0); atomic_store(&r->tail, 0);
    pid_t pid = fork();
    if (pid == 0) {                       /* consumer */
        int64_t t = 0; uint64_t sum = 0;
        while (t < n) {
            int64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
            if (h == t) { __builtin_ia32_pause(); continue; }
            for (int64_t s = t; s < h; s++) {
                unsigned char *slot = r->slots + (s & (CAP - 1)) * STRIDE;
                uint32_t len; memcpy(&len, slot, 4);
                sum += slot[8] + len;
            }
            t = h;
            atomic_store_explicit(&r->tail, t, memory_order_release);
        }
        _exit(sum == 0xFFFFFFFF);
    }
    unsigned char msg[MSG];
    for (int i = 0; i < MSG; i++) msg[i] = (unsigned char)i;
    int64_t *samples = lat ? malloc(sizeof(int64_t) * n) : NULL;
    double c0 = cpu_s(RUSAGE_SELF);
    int64_t t0 = now_ns() + 1000000, tail_cache = 0, got = 0;
    double period = lat ? 1e9 / rate : 0;
    for (int64_t s = 0; s < n; s++) {
        if (lat) {
            int64_t due = t0 + (int64_t)(s * period);
            for (;;) {                     /* open loop: poll replies until message s is due */
                int64_t tl = atomic_load_explicit(&r->tail, memory_order_acquire), now = now_ns();
                for (; got < tl; got++) samples[got] = now - (t0 + (int64_t)(got * period));
                if (now >= due) break;
            }
        }
        while (s - tail_cache >= CAP) tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        unsigned char *slot = r->slots + (s & (CAP - 1)) * STRIDE;
        uint32_t len = MSG; memcpy(slot, &len, 4);
        memcpy(slot + 8, msg, MSG);
        atomic_store_explicit(&r->head, s + 1, memory_order_release);
    }
    while (got < n) {
        int64_t tl = atomic_load_explicit(&r->tail, memory_order_acquire), now = now_ns();
        if (lat) for (; got < tl; got++) samples[got] = now - (t0 + (int64_t)(got * period));
        else got = tl;
    }
    int64_t t1 = now_ns();
    int status; waitpid(pid, &status, 0);
    double cpu = cpu_s(RUSAGE_SELF) - c0 + cpu_s(RUSAGE_CHILDREN);
    if (lat) {
        qsort(samples, n, sizeof(int64_t), cmp);
        printf("{\"p50\": %lld, \"p99\": %lld, \"p999\": %lld, \"max\": %lld}\n",
               (long long)samples[(int64_t)(n * 0.50)], (long long)samples[(int64_t)(n * 0.99)],
               (long long)samples[(int64_t)(n * 0.999)], (long long)samples[n - 1]);
    } else {
        printf("{\"msgs_per_s\": %.1f, \"cpu_s\": %.4f}\n", n / ((t1 - t0 + 1000000) / 1e9), cpu);
    }
    return 0;
}
"""


def build_c_ring() -> str | None:
    """Compile the C ring; None with a printed reason when there is no C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    src = os.path.join(bench_dir(), "c_ring.c")
    exe = os.path.join(bench_dir(), "c_ring")
    with open(src, "w", encoding="ascii") as fh:
        fh.write(C_RING)
    proc = subprocess.run([cc, "-O2", "-std=c11", "-o", exe, src], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    return exe


def bench_c_ring(sizes: Sizes) -> Result:
    exe = build_c_ring()
    if exe is None:
        return Result.not_measured("c_ring", "no working C compiler (gcc/cc) on PATH")
    cpus: list[float] = []

    def one() -> float:
        out = subprocess.run([exe, "tput", str(sizes.many * 2)], capture_output=True, text=True, check=True,
                             timeout=300)
        res = json.loads(out.stdout)
        cpus.append(res["cpu_s"] / (sizes.many * 2) * 1e6)
        return float(res["msgs_per_s"])

    stat = repeat(one, sizes.runs)
    row = Result("c_ring", msgs_per_s=stat.median, range=(stat.lo, stat.hi), cpu_s_per_m=sorted(cpus)[1 if
                 len(cpus) > 2 else 0], note="plain C SPSC ring, spin (gcc -O2)")
    def lat_once() -> dict[str, int]:
        out = subprocess.run([exe, "lat", str(sizes.lat_n), str(sizes.lat_rate)], capture_output=True, text=True,
                             check=True, timeout=300)
        res: dict[str, int] = json.loads(out.stdout)
        return res

    runs = sorted((lat_once() for _ in range(sizes.lat_runs)), key=lambda r: r["p50"])
    lat = runs[len(runs) // 2]
    row.p50_us, row.p99_us, row.p999_us = lat["p50"] / 1000, lat["p99"] / 1000, lat["p999"] / 1000
    row.extra["max_us"] = round(lat["max"] / 1000, 1)
    return row


# ---- byteor ----------------------------------------------------------------------------------

def _byteor_stage(shared: Shared, n: int, cfg: tuple[str, int, int, int]) -> None:
    """A builtin stage process: attach, run the native loop (GIL released) until stop + drained."""
    path, c, op, wait = cfg
    ring = N.Ring.attach(path)
    shared.ready.set()
    got = ring.run_builtin(c, op, 1, wait) + 1
    shared.finish(got)
    ring.close()


def _new_ring(deps: list[int]) -> tuple[str, N.Ring]:
    path = os.path.join(bench_dir(), f"byteor-{time.monotonic_ns()}.ring")
    return path, N.Ring.create(path, CAPACITY, MSG_BYTES, deps, HASH)


def byteor_once(n: int, *, wait: int, many: bool, stages: int = 1,
                op: int = N.OP_IDENTITY) -> tuple[float, float, float]:
    deps = [0] + [1 << (i - 1) for i in range(1, stages)]  # a chain: stage i waits for stage i-1
    path, ring = _new_ring(deps)
    batch = BLOCK

    def produce(count: int) -> None:
        if many:
            pm = ring.publish_many
            for _ in range(count // BATCH):
                pm(batch, wait)
            if count % BATCH:
                pm(batch[:count % BATCH], wait)
        else:
            # the strategy under test is the stage's; the producer only waits when the ring is full
            # (then with the default, backoff), so its loop is the same one-argument call everywhere
            per_message(ring.publish, count)
        ring.request_stop()

    try:
        if stages == 1:
            return pair_throughput(_byteor_stage, ((path, 0, op, wait),), produce, n)
        # earlier stages run in their own processes; the last one is the measured consumer
        helpers = []
        for i in range(stages - 1):
            sh = Shared.make()
            p = CTX.Process(target=_child_main, args=(_byteor_stage, sh, n, ((path, i, op, wait),)), daemon=True)
            p.start()
            sh.ready.wait(60)
            helpers.append(p)
        try:
            return pair_throughput(_byteor_stage, ((path, stages - 1, op, wait),), produce, n)
        finally:
            for p in helpers:
                p.join(60)
    finally:
        ring.close()
        os.unlink(path)


def _byteor_py_stage(shared: Shared, n: int, cfg: tuple[str, int, int, int]) -> None:
    """A Python stage process: ``noop_stage`` (or its in-place form) run by the native stage loop."""
    path, c, form, wait = cfg
    ring = N.Ring.attach(path)
    fn: Callable[..., Any] = noop_stage_inplace if form == N.FORM_INPLACE else noop_stage
    shared.ready.set()
    got = ring.run_stage(c, fn, form, wait) + 1
    shared.finish(got)
    ring.close()


def _byteor_sink(shared: Shared, n: int, cfg: tuple[str, int, int]) -> None:
    """A native counting sink (``count_sink``): the measured consumer of the Python stage rows."""
    path, c, wait = cfg
    ring = N.Ring.attach(path)
    shared.ready.set()
    msgs, _bytes = ring.count_sink(c, wait)
    shared.finish(msgs)
    ring.close()


def byteor_py_once(n: int, *, wait: int, form: int, stages: int = 1) -> tuple[float, float, float]:
    """publish_many -> ``stages`` Python stage processes in a chain -> a native sink process."""
    deps = [0] + [1 << (i - 1) for i in range(1, stages + 1)]  # each waits for the one before it
    path, ring = _new_ring(deps)

    def produce(count: int) -> None:
        pm = ring.publish_many
        for _ in range(count // BATCH):
            pm(BLOCK, wait)
        if count % BATCH:
            pm(BLOCK[:count % BATCH], wait)
        ring.request_stop()

    helpers = []
    try:
        for i in range(stages):
            sh = Shared.make()
            p = CTX.Process(target=_child_main, args=(_byteor_py_stage, sh, n, ((path, i, form, wait),)), daemon=True)
            p.start()
            sh.ready.wait(60)
            helpers.append(p)
        return pair_throughput(_byteor_sink, ((path, stages, wait),), produce, n)
    finally:
        for p in helpers:
            p.join(60)
        ring.close()
        os.unlink(path)


def byteor_latency(sizes: Sizes, wait: int) -> list[int]:
    """Round trip, open loop like the peers': publish -> builtin stage process (strategy ``wait``) ->
    its gating -> this process, the egress consumer (cell 1, after the stage), which waits for the
    reply with the same strategy but never past the next message's due time. Message i is due at
    t0 + i/rate and its latency counts from that time."""
    path, ring = _new_ring([0, 1])
    shared = Shared.make()
    proc = CTX.Process(target=_child_main, args=(_byteor_stage, shared, sizes.lat_n, ((path, 0, N.OP_IDENTITY, wait),)),
                       daemon=True)
    proc.start()
    shared.ready.wait(60)
    pub, wait_for, release, msg = ring.publish, ring.wait_for, ring.release, MSG
    nxt = [0]

    def replies(budget_ns: int) -> int:
        """Wait for the stage's reply (the same strategy), at most until the next send is due; the
        replies seen last time are released first, so releasing is not timed as latency."""
        if nxt[0]:
            release(1, nxt[0] - 1)
        avail = wait_for(1, nxt[0], wait, budget_ns)
        if avail < nxt[0]:
            return 0
        k = avail - nxt[0] + 1
        nxt[0] = avail + 1
        return k

    try:
        return open_loop(lambda i: pub(msg), lambda: replies(0), sizes.lat_n, sizes.lat_rate, wait_reply=replies)
    finally:
        ring.request_stop()
        proc.join(60)
        ring.close()
        os.unlink(path)


def idle_cpu_pct(wait: int, seconds: float = 1.0) -> float:
    """CPU use (% of one core) of a builtin stage process waiting on an idle ring."""
    path, ring = _new_ring([0])
    shared = Shared.make()
    proc = CTX.Process(target=_child_main, args=(_byteor_stage, shared, 0, ((path, 0, N.OP_IDENTITY, wait),)),
                       daemon=True)
    proc.start()
    try:
        shared.ready.wait(60)
        time.sleep(0.2)
        assert proc.pid is not None
        c0 = Meter.cpu_of(proc.pid)
        time.sleep(seconds)
        return 100.0 * (Meter.cpu_of(proc.pid) - c0) / seconds
    finally:
        ring.request_stop()
        proc.join(60)
        ring.close()
        os.unlink(path)


def bench_byteor(sizes: Sizes) -> list[Result]:
    per_wait: dict[str, Result] = {}
    for label, wait in WAITS.items():
        row = measure(f"byteor.publish[{label}]", sizes.runs,
                      functools.partial(byteor_once, sizes.fast, wait=wait, many=False))
        lat_runs = sorted((byteor_latency(sizes, wait) for _ in range(sizes.lat_runs)),
                          key=lambda lat: sorted(lat)[len(lat) // 2])
        with_latency(row, lat_runs[len(lat_runs) // 2])
        row.extra["idle_cpu_pct"] = round(idle_cpu_pct(wait), 2)
        row.note = f"wait={label}; an idle stage uses {row.extra['idle_cpu_pct']:.1f}% of a core"
        per_wait[label] = row
    # the headline row: the default strategy's throughput, CPU and round trip (one strategy a row)
    base = per_wait["backoff"]
    pub = Result("byteor.publish", msgs_per_s=base.msgs_per_s, range=base.range, p50_us=base.p50_us,
                 p99_us=base.p99_us, p999_us=base.p999_us, cpu_s_per_m=base.cpu_s_per_m, rss_mb=base.rss_mb,
                 note="publish() per message -> builtin stage process; wait=backoff (the default); "
                      "byteor.publish[spin] has the lowest round trip")
    many = measure("byteor.publish_many", sizes.runs,
                   lambda: byteor_once(sizes.many, wait=N.WAIT_BACKOFF, many=True))
    many.note = f"publish_many(batches of {BATCH}) -> builtin stage process (backoff)"
    if sizes.flat_n:
        before = _rss_mb()
        rate, _cpu, rss = byteor_once(sizes.flat_n, wait=N.WAIT_BACKOFF, many=True)
        growth = _rss_mb() - before
        many.extra["flat_run"] = {"messages": sizes.flat_n, "msgs_per_s": round(rate, 1),
                                  "producer_rss_growth_mb": round(growth, 2), "rss_mb": round(rss, 1)}
        many.note += f"; RSS growth over {sizes.flat_n / 1e6:.0f} M messages: {growth:.1f} MB"
    chain = measure("byteor.chain4", sizes.runs,
                    lambda: byteor_once(sizes.fast, wait=N.WAIT_BACKOFF, many=True, stages=4, op=N.OP_ADD_U8))
    chain.note = "publish_many -> 4 add_u8 stage processes in a chain (backoff)"
    py_rows = []
    for name, form, stages, what in (
        ("byteor.py_stage", N.FORM_MAP, 1, "noop_stage(msg) map stage process"),
        ("byteor.py_stage_inplace", N.FORM_INPLACE, 1, "noop_stage_inplace(slot, n) stage process"),
        ("byteor.chain4_py", N.FORM_MAP, 4, "4 noop_stage map stage processes in a chain"),
    ):
        row = measure(name, sizes.runs,
                      lambda f=form, k=stages: byteor_py_once(sizes.fast, wait=N.WAIT_BACKOFF, form=f, stages=k))
        row.note = f"publish_many -> {what} (native stage loop) -> native sink process (backoff)"
        py_rows.append(row)
    return [pub, many, chain, *py_rows, *per_wait.values()]


# ======================================================================================== main

def main(argv: list[str] | None = None) -> int:
    p = parser("byteor SingleRing vs Python IPC peers: 64-byte messages across processes")
    p.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown (for docs/performance.md)")
    p.add_argument("--metrics", action="store_true",
                   help="also measure representative rows with run --metrics off and on (same run)")
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    steps: list[tuple[str, Callable[[Sizes], Result | list[Result]]]] = [
        ("mp.Queue", bench_mp_queue),
        ("mp.Pipe", bench_mp_pipe),
        ("faster_fifo", bench_faster_fifo),
        ("pyzmq", bench_pyzmq),
        ("iceoryx2", bench_iceoryx2),
        ("py_ring", bench_py_ring),
        ("c_ring", bench_c_ring),
        ("byteor", bench_byteor),
    ]
    results: list[Result] = []
    baselines = [Baseline("py_call_limit", len, sizes, "len(msg)"),
                 Baseline("py_fn_limit", noop_stage, sizes, "noop_stage(msg), a Python function,")]
    for i, (name, fn) in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {name} ...", file=sys.stderr, flush=True)
        for b in baselines:
            b.sample()
        try:
            out = fn(sizes)
        except Exception as exc:  # a peer that breaks is reported, never faked
            out = Result.not_measured(name, f"{type(exc).__name__}: {exc}")
        results.extend(out if isinstance(out, list) else [out])
    for b in baselines:
        b.sample()
    results[:0] = [b.result() for b in baselines]
    print_table(f"ring: {MSG_BYTES}-byte messages, producer -> consumer process "
                f"({'quick' if args.quick else 'full'} run; latency at {sizes.lat_rate} msg/s offered)",
                results, ratio_to=RATIO_TO)
    goals = goal_checks(results)
    for line in goals:
        print(line)
    metrics = overhead_json("ring", args.quick) if args.metrics else None
    if args.json:
        write_json(args.json, results, extra={"goals": goals, "sizes": sizes.__dict__, "metrics_overhead": metrics})
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(markdown_table(results, RATIO_TO))
            fh.write("\n" + "\n".join(f"- {g}" for g in goals) + "\n")
    return 0


def goal_checks(results: list[Result]) -> list[str]:
    """The issue's goals as ratios within this run (reported, not asserted)."""
    by = {r.name: r for r in results}

    def ratio(a: str, b: str) -> float | None:
        x, y = by.get(a), by.get(b)
        if x is None or y is None or not x.msgs_per_s or not y.msgs_per_s:
            return None
        return x.msgs_per_s / y.msgs_per_s

    def line(what: str, value: float | None, goal: float, unit: str = "x") -> str:
        if value is None:
            return f"goal {what}: not measured"
        ok = "met" if value >= goal else "NOT met"
        return f"goal {what}: {value:.2f}{unit} (goal >= {goal}{unit}) {ok}"

    out = [
        line("byteor.publish / py_call_limit", ratio("byteor.publish", "py_call_limit"), 0.60),
        line("byteor.py_stage / py_fn_limit", ratio("byteor.py_stage", "py_fn_limit"), 0.40),
        line("byteor.py_stage / mp.Queue.py_consumer", ratio("byteor.py_stage", "mp.Queue.py_consumer"), 20.0),
        line("byteor.publish / py_ring", ratio("byteor.publish", "py_ring"), 4.0),
        line("byteor.publish / mp.Queue", ratio("byteor.publish", "mp.Queue"), 60.0),
        line("byteor.publish_many / c_ring", ratio("byteor.publish_many", "c_ring"), 0.40),
    ]
    spin, c = by.get("byteor.publish[spin]"), by.get("c_ring")
    if spin and c and spin.p50_us and c.p50_us:
        out.append(f"goal spin round-trip p50 within 2x of c_ring: {spin.p50_us:.2f} us vs {c.p50_us:.2f} us "
                   f"({spin.p50_us / c.p50_us:.2f}x) {'met' if spin.p50_us <= 2 * c.p50_us else 'NOT met'}")
    block = by.get("byteor.publish[block]")
    if block and "idle_cpu_pct" in block.extra:
        pct = block.extra["idle_cpu_pct"]
        out.append(f"goal idle block pipeline < 1% CPU: {pct:.2f}% {'met' if pct < 1 else 'NOT met'}")
    for peer in ("iceoryx2", "faster_fifo", "pyzmq"):
        out.append(line(f"byteor.publish / {peer}", ratio("byteor.publish", peer), 1.0))
    return out


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
