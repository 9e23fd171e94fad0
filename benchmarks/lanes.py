"""LaneGraph lanes and journal: ``python -m benchmarks.lanes [--quick] [--json PATH]``.

Rows, all measured in the same run (ratios are what matter):

* ``singlering_1stage``: a SingleRing with one identity stage (``run_builtin`` in a child process)
  and an egress cell (``count_sink`` in another child); the producer publishes in batches.
* ``events_lane``: the same producer into an ``events`` lane, one subscriber counting natively.
* ``fanout_1`` / ``fanout_2`` / ``fanout_4``: a fanout lane with 1, 2, 4 subscriber processes; each
  counts every message (throughput = messages published per second).
* ``mpsc_2p``: two producer processes into one mpsc lane, one consumer.
* ``file_write`` (the disk's limit here: buffered ``write`` of the same payloads, then ``flush``),
  ``journal_none`` / ``journal_segment`` / ``journal_always``: journal appends, in MB/s of payload.
* ``graph_sp``: a router (round robin, 2 branches) + merge graph end to end through ``run_lanegraph``
  in one process (a generator in, one ``outputs`` callback per message out); ``graph_mp_callback``:
  the same harness with one process per role, role start-up included.
* ``graph_mp``: the same graph with one process per role (native role loops) run by a
  ``RunSession``, timed like the ring rows from the moment every role is up to drained: fed from a
  list (``publish_many`` per batch), delivered to a sink in batches (``Ring.drain`` per batch).
  ``graph_mp_file``: file to file (native ``Ingest`` / ``Egress``, no Python per message).
  ``graph_mp_py``: ``graph_mp`` with a Python stage role (``noop_stage``) before the router.
* ``graph_roles_native``: the same router + merge roles, one process each running
  ``_native.run_role``, fed by ``publish_many`` into the input lane and counted by a native sink on
  the output lane: the graph without the Python ingress and egress of ``graph_mp``.

Goals: events >= 80% of singlering_1stage; fanout_4 >= 50% of fanout_1; journal_none >= 50% of
file_write; graph_mp >= 10% of singlering_1stage (printed with graph_roles_native's ratio, which
shows what the roles themselves reach).

Ring rows are timed from the first publish to the moment the last subscriber counted its last
message (CLOCK_MONOTONIC stamps from the subscribers), over 20 M messages (2 M with --quick). Every
row uses the same wait strategy (--wait, default backoff).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from benchmarks._common import Result, bench_dir, parser, print_table, repeat, write_json
from benchmarks.obs import overhead_json
from byteor import _native
from byteor.edges import Sink, Source
from byteor.lanes.journal import JournalWriter
from byteor.lanes.shm import LaneSpec, create_lane, lane_file
from byteor.shm import attach_ring, create_ring

HASH = "sha256:" + "ab" * 32
RAW_HASH = bytes.fromhex("ab" * 32)
#: Settings chosen on the command line (the wait strategy every participant uses).
_CFG: dict[str, Any] = {"wait": _native.WAIT_BACKOFF, "wait_name": "backoff"}
MSG = b"m" * 64
BATCH = 256
CAPACITY = 65536


def _sink(path: str, c: int, q: Any, wait: int) -> None:
    ring = attach_ring(path)
    counted = ring.count_sink(c, wait)
    # when this subscriber had every message (CLOCK_MONOTONIC, the same clock in every process):
    # the parent's elapsed time then leaves out passing the result back through the queue
    q.put((*counted, time.clock_gettime(time.CLOCK_MONOTONIC)))
    ring.close()


def _stage(path: str, c: int, wait: int) -> None:
    ring = attach_ring(path)
    ring.run_builtin(c, _native.OP_IDENTITY, 0, wait)
    ring.close()


def _producer(path: str, n: int, wait: int) -> None:
    ring = attach_ring(path)
    batch = [MSG] * BATCH
    for _ in range(n // BATCH):
        ring.publish_many(batch, wait)
    ring.close()


def _drive(path: str, n: int, children: list[Any], q: Any, n_sinks: int, *, producers: int = 0) -> float:
    """Start children, publish n messages (or let ``producers`` children do it), stop, wait."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=t, args=a) for t, a in children]
    for p in procs:
        p.start()
    ring = attach_ring(path)
    time.sleep(0.2)  # let the consumers attach and start waiting
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    if producers:
        prods = [ctx.Process(target=_producer, args=(path, n // producers, _CFG["wait"])) for _ in range(producers)]
        for p in prods:
            p.start()
        for p in prods:
            p.join(600)
    else:
        batch = [MSG] * BATCH
        for _ in range(n // BATCH):
            ring.publish_many(batch, _CFG["wait"])
    ring.request_stop()
    counts = [q.get(timeout=600) for _ in range(n_sinks)]
    elapsed = max(c[2] for c in counts) - t0
    for p in procs:
        p.join(60)
    ring.close()
    expected = (n // BATCH) * BATCH if not producers else producers * ((n // producers) // BATCH) * BATCH
    if any(c[0] != expected for c in counts):
        raise RuntimeError(f"lost messages: {counts} != {expected}")
    return expected / elapsed


def bench_singlering(n: int) -> float:
    path = os.path.join(bench_dir(), f"sr-{time.monotonic_ns()}")
    ring = create_ring(path, capacity=CAPACITY, slot_bytes=128, deps=[0, 0b1], spec_hash=RAW_HASH)
    q = mp.get_context("spawn").Queue()
    try:
        return _drive(path, n, [(_stage, (path, 0, _CFG["wait"])), (_sink, (path, 1, q, _CFG["wait"]))], q, 1)
    finally:
        ring.close()
        os.unlink(path)


def bench_fanout(n: int, cells: int, kind: str = "fanout", producers: int = 0) -> float:
    root = tempfile.mkdtemp(dir=bench_dir())
    lane = LaneSpec("l", kind, CAPACITY, 128, cells)
    ring = create_lane(root, lane, HASH)
    path = lane_file(root, "l", kind)
    q = mp.get_context("spawn").Queue()
    try:
        sinks = [(_sink, (path, c, q, _CFG["wait"])) for c in range(cells)]
        return _drive(path, n, sinks, q, cells, producers=producers)
    finally:
        ring.close()
        shutil.rmtree(root, ignore_errors=True)


def bench_file(n: int, payload: bytes, directory: str) -> float:
    path = os.path.join(directory, "plain.bin")
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for _ in range(n):
            fh.write(payload)
        fh.flush()
    elapsed = time.perf_counter() - t0
    os.unlink(path)
    return n * len(payload) / elapsed / 1e6


def native_journal_note() -> str:
    """Use the C journal segment: from byteor._native, else journal.c compiled for this run."""
    from byteor.lanes import journal as jmod

    if jmod.native_available():
        return "C segment (byteor._native)"
    import subprocess
    import sys
    import sysconfig

    src = os.path.join(os.path.dirname(jmod.__file__), "..", "_native", "journal.c")
    out = tempfile.mkdtemp(dir=bench_dir())
    target = os.path.join(out, "_byteor_journal" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    try:
        subprocess.run([os.environ.get("CC", "gcc"), "-std=c11", "-O3", "-fPIC", "-shared",
                        "-DBYTEOR_JOURNAL_STANDALONE", "-I" + sysconfig.get_paths()["include"], src,
                        "-o", target], check=True, timeout=120, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Python segment (journal.c not hooked into byteor._native; gcc build failed: {exc})"
    sys.path.insert(0, out)
    import _byteor_journal

    jmod._NATIVE_SEGMENT = _byteor_journal.JournalSegment
    return "C segment (journal.c built for this run: not yet hooked into byteor._native)"


def bench_journal(n: int, payload: bytes, directory: str, fsync: str) -> float:
    d = tempfile.mkdtemp(dir=directory)
    try:
        w = JournalWriter(d, segment_bytes=64 * 1024 * 1024, slot_bytes=len(payload), fsync=fsync)
        append = w.append
        t0 = time.perf_counter()
        for _ in range(n):
            append(payload)
        w.flush()
        elapsed = time.perf_counter() - t0
        w.close()
        return n * len(payload) / elapsed / 1e6
    finally:
        shutil.rmtree(d, ignore_errors=True)


def noop_stage(slot: memoryview, length: int) -> int:
    """The Python stage of ``graph_mp_py``: keeps every message as it is."""
    return length


noop_stage.byteor_modifies = False  # type: ignore[attr-defined]  # read-only: the registry reads this


def graph_kv(py_stage: bool) -> str:
    """router (round robin, 2 branches) + merge; with ``py_stage``, a Python stage role before it."""
    first = "s" if py_stage else "in"
    lines = [
        "pipeline.name=bench-rm", "pipeline.target=LaneGraph",
        "pipeline.lanes.0.name=in", "pipeline.lanes.0.kind=events", "pipeline.lanes.0.capacity=4096",
        "pipeline.lanes.1.name=l0", "pipeline.lanes.1.kind=events", "pipeline.lanes.1.capacity=4096",
        "pipeline.lanes.2.name=l1", "pipeline.lanes.2.kind=events", "pipeline.lanes.2.capacity=4096",
        "pipeline.lanes.3.name=out", "pipeline.lanes.3.kind=events", "pipeline.lanes.3.capacity=4096",
        "pipeline.endpoints.0.name=src", "pipeline.endpoints.0.direction=ingress", "pipeline.endpoints.0.lane=in",
        "pipeline.endpoints.1.name=dst", "pipeline.endpoints.1.direction=egress", "pipeline.endpoints.1.lane=out",
        "pipeline.roles.0.name=r", "pipeline.roles.0.kind=router", f"pipeline.roles.0.inputs.0={first}",
        "pipeline.roles.0.outputs.0=l0", "pipeline.roles.0.outputs.1=l1", "pipeline.roles.0.route=round_robin",
        "pipeline.roles.1.name=m", "pipeline.roles.1.kind=merge", "pipeline.roles.1.inputs.0=l0",
        "pipeline.roles.1.inputs.1=l1", "pipeline.roles.1.outputs.0=out",
    ]
    if py_stage:
        lines += ["pipeline.lanes.4.name=s", "pipeline.lanes.4.kind=events", "pipeline.lanes.4.capacity=4096",
                  "pipeline.roles.2.name=py", "pipeline.roles.2.kind=stage", "pipeline.roles.2.inputs.0=in",
                  "pipeline.roles.2.outputs.0=s", "pipeline.roles.2.op=resolver",
                  "pipeline.roles.2.resolver_key=py:benchmarks.lanes:noop_stage"]
    return "\n".join(lines) + "\n"


def bench_graph_callback(n: int, sp: bool) -> float:
    """The graph through ``run_lanegraph``: a generator in, one ``outputs`` callback per message out,
    timed from the call (role process start-up included) to its return."""
    from byteor.runtime.lanegraph import run_lanegraph
    from byteor.spec.kv import decode_kv

    spec = decode_kv(graph_kv(False))
    count = [0]

    def sink(_ep: str, _msg: bytes) -> None:
        count[0] += 1

    root = tempfile.mkdtemp(dir=bench_dir())
    try:
        t0 = time.perf_counter()
        run_lanegraph(spec, sp=sp, inputs=(MSG for _ in range(n)), outputs=sink,
                      lane_path=os.path.join(root, "lanes"), journal_dir=os.path.join(root, "journal"),
                      wait=_CFG["wait_name"])
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if count[0] != n:
        raise RuntimeError(f"graph lost messages: {count[0]} != {n}")
    return n / elapsed


class _CountSink(Sink):
    """Counts what egress hands over, one call per batch."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, messages: Sequence[bytes], shard: int = 0) -> None:
        self.count += len(messages)


def bench_graph(n: int, *, py_stage: bool = False, files: bool = False) -> float:
    """The graph run by a multi-process :class:`RunSession` (what ``byteor run`` and ``Pipeline``
    use), timed like the ring rows: from the moment every role process is up to drained. Fed from a
    list (one ``publish_many`` per batch) into a counting sink (one call per batch); with ``files``,
    from a file of lines into a file (native ingest and egress: no Python per message)."""
    from byteor.edges import FileSink, FileSource, IterableSource
    from byteor.runtime.session import RunOptions, RunSession
    from byteor.spec.kv import decode_kv

    root = tempfile.mkdtemp(dir=bench_dir())
    source: Source
    if files:
        src = os.path.join(root, "in.lines")
        with open(src, "wb") as fh:
            fh.write((MSG + b"\n") * n)
        source = FileSource(src, "lines")
        sink: Sink = FileSink(os.path.join(root, "out.lines"), "lines")
    else:
        source = IterableSource([MSG] * n)
        sink = _CountSink()
    session = RunSession(decode_kv(graph_kv(py_stage)),
                         RunOptions(ring_path=os.path.join(root, "lanes"), journal_dir=os.path.join(root, "journal"),
                                    wait=_CFG["wait_name"]))
    try:
        with session:
            session.start(sink)
            deadline = time.monotonic() + 120
            while not all(st.pid for st in session.engine.stats.values()):  # every role attached its lanes
                if time.monotonic() > deadline:
                    raise RuntimeError("graph roles did not start within 120 s")
                time.sleep(0.005)
            t0 = time.perf_counter()
            session.run(source)
            elapsed = time.perf_counter() - t0
        out = session.summary()["messages_out"]
        if files and os.path.getsize(os.path.join(root, "out.lines")) != n * (len(MSG) + 1):
            raise RuntimeError("graph_mp_file: the output file is not every message")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if out != n:
        raise RuntimeError(f"graph lost messages: {out} != {n}")
    return n / elapsed


def _role(kind: str, ins: list[str], outs: list[str], stats: str, wait: int) -> None:
    """One role process of graph_roles_native: the native role loop over attached lane rings."""
    from byteor.runtime.lanegraph._stats import RoleStats

    st = RoleStats(stats)
    inputs = [(attach_ring(p), 0) for p in ins]
    outputs = [(attach_ring(p), "block", os.path.basename(p)) for p in outs]
    _native.run_role(kind, inputs, outputs, st.buffer, wait=wait)
    for ring, *_ in inputs + outputs:  # type: ignore[operator]
        ring.close()
    st.close()


def bench_graph_roles(n: int) -> float:
    """graph_mp's router + merge roles with native edges: publish_many in, count_sink out. Stops
    propagate as the runner does it: a lane stops once its writer exited."""
    from byteor.runtime.lanegraph._stats import RoleStats

    root = tempfile.mkdtemp(dir=bench_dir())
    lanes = {name: LaneSpec(name, "events", 4096, 128, 1) for name in ("in", "l0", "l1", "out")}
    rings = {name: create_lane(root, lane, HASH) for name, lane in lanes.items()}
    path = {name: lane_file(root, name, "events") for name in lanes}
    stats = [os.path.join(root, f"{r}.stats") for r in ("r", "m")]
    for p in stats:
        RoleStats(p, create=True).close()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    wait = _CFG["wait"]
    router = ctx.Process(target=_role, args=("router", [path["in"]], [path["l0"], path["l1"]], stats[0], wait))
    merge = ctx.Process(target=_role, args=("merge", [path["l0"], path["l1"]], [path["out"]], stats[1], wait))
    sink = ctx.Process(target=_sink, args=(path["out"], 0, q, wait))
    try:
        for p in (router, merge, sink):
            p.start()
        time.sleep(0.3)  # let the roles attach and start waiting
        batch = [MSG] * BATCH
        t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        for _ in range(n // BATCH):
            rings["in"].publish_many(batch, wait)
        rings["in"].request_stop()
        router.join(600)
        rings["l0"].request_stop()
        rings["l1"].request_stop()
        merge.join(600)
        rings["out"].request_stop()
        count, _bytes, done = q.get(timeout=600)
        sink.join(60)
    finally:
        for p in (router, merge, sink):
            if p.is_alive():
                p.kill()
        for ring in rings.values():
            ring.close()
        shutil.rmtree(root, ignore_errors=True)
    expected = (n // BATCH) * BATCH
    if count != expected:
        raise RuntimeError(f"graph lost messages: {count} != {expected}")
    return expected / (done - t0)


def main() -> None:
    ap = parser("LaneGraph lanes vs SingleRing, fanout width, mpsc, journal vs plain file, router+merge")
    ap.add_argument("--journal-dir", default="/var/tmp",
                    help="a directory on a real filesystem for the journal rows (default /var/tmp)")
    ap.add_argument("--wait", choices=("spin", "yield", "backoff", "block"), default="backoff",
                    help="wait strategy of every ring participant (default backoff)")
    ap.add_argument("--metrics", action="store_true",
                    help="also measure representative rows with run --metrics off and on (same run)")
    args = ap.parse_args()
    _CFG["wait"] = getattr(_native, f"WAIT_{args.wait.upper()}")
    _CFG["wait_name"] = args.wait
    # a fanout run of 4 M messages lasts ~20-40 ms here: a handful of scheduler time slices, so one
    # preemption decided the ratio; 20 M messages (2 M quick) average over the scheduling
    n = 2_000_000 if args.quick else 20_000_000
    runs = 1 if args.quick else 3
    results: list[Result] = []

    def row(name: str, fn: Any, note: str = "", unit: str = "msgs") -> None:
        stat = repeat(fn, runs)
        r = Result(name=name, msgs_per_s=stat.median, note=note)
        r.range = (stat.lo, stat.hi)
        if unit != "msgs":
            r.extra["unit"] = unit
        results.append(r)

    row("singlering_1stage", lambda: bench_singlering(n), "producer -> identity stage (C) -> egress (C)")
    row("events_lane", lambda: bench_fanout(n, 1, "events"), "producer -> events lane -> subscriber (C)")
    for k in (1, 2, 4):
        row(f"fanout_{k}", lambda k=k: bench_fanout(n, k), f"{k} subscriber process(es), each sees every message")
    row("mpsc_2p", lambda: bench_fanout(n, 1, "mpsc", producers=2), "2 producer processes, 1 consumer")
    jn = 100_000 if args.quick else 2_000_000
    payload = b"j" * 248  # + 8-byte record header = 256 bytes per record on disk
    jdir = tempfile.mkdtemp(prefix="byteor-bench-journal-", dir=args.journal_dir)
    impl = native_journal_note()
    try:
        row("file_write", lambda: bench_file(jn, payload, jdir), "buffered write() of the payloads: MB/s",
            unit="MB/s")
        for posture in ("none", "segment"):
            row(f"journal_{posture}", lambda p=posture: bench_journal(jn, payload, jdir, p),
                f"append, fsync={posture}: MB/s; {impl}", unit="MB/s")
        row("journal_always", lambda: bench_journal(2_000 if args.quick else 20_000, payload, jdir, "always"),
            "append, fsync=always (msync per record): MB/s", unit="MB/s")
    finally:
        shutil.rmtree(jdir, ignore_errors=True)
    gn = 50_000 if args.quick else 500_000
    mn = 500_000 if args.quick else 5_000_000
    fn = 200_000 if args.quick else 2_000_000
    row("graph_sp", lambda: bench_graph_callback(gn, True),
        "router(rr, 2) + merge, one process: run_lanegraph, a generator in, a callback per message out")
    row("graph_mp", lambda: bench_graph(mn), "router(rr, 2) + merge, one process per role, RunSession: a list in "
        "(publish_many per batch), a sink called per batch out (egress drain); from roles up to drained")
    row("graph_mp_file", lambda: bench_graph(fn, files=True),
        "graph_mp file to file: native ingest (lines) and egress (lines), no Python per message")
    row("graph_mp_py", lambda: bench_graph(mn // 5, py_stage=True),
        "graph_mp with a Python stage role (noop_stage, read-only form) before the router")
    row("graph_mp_callback", lambda: bench_graph_callback(gn, False),
        "graph_sp's harness, one process per role: start-up of 2 role processes included")
    row("graph_roles_native", lambda: bench_graph_roles(n),
        "router(rr, 2) + merge processes (run_role); publish_many in, native sink out")

    by = {r.name: r.msgs_per_s or 0.0 for r in results}
    goals = {
        "events_vs_singlering": by["events_lane"] / by["singlering_1stage"],
        "fanout4_vs_fanout1": by["fanout_4"] / by["fanout_1"],
        "journal_none_vs_file": by["journal_none"] / by["file_write"],
        "graph_mp_vs_singlering": by["graph_mp"] / by["singlering_1stage"],
        "graph_mp_file_vs_singlering": by["graph_mp_file"] / by["singlering_1stage"],
        "graph_roles_native_vs_singlering": by["graph_roles_native"] / by["singlering_1stage"],
    }
    targets = {"events_vs_singlering": 0.8, "fanout4_vs_fanout1": 0.5, "journal_none_vs_file": 0.5,
               "graph_mp_vs_singlering": 0.10}
    for r in results:
        if r.name in ("file_write", "journal_none", "journal_segment", "journal_always"):
            r.extra["vs_file_write"] = round((r.msgs_per_s or 0) / by["file_write"], 3)
        elif r.name.startswith("fanout"):
            r.extra["vs_fanout_1"] = round((r.msgs_per_s or 0) / by["fanout_1"], 3)
    print_table("lanes (msgs/s; journal and file rows in MB/s)", results,
                ratio_to=["singlering_1stage", "fanout_1", "file_write"])
    for name, value in goals.items():
        goal = targets.get(name)
        verdict = "" if goal is None else f" (goal >= {goal}: {'met' if value >= goal else 'NOT met'})"
        print(f"{name}: {value:.3f}{verdict}")
    metrics = overhead_json("lanes", args.quick) if args.metrics else None
    if args.json:
        write_json(args.json, results, extra={"goals": goals, "n": n, "journal_records": jn, "wait": args.wait,
                                              "capacity": CAPACITY, "msg_bytes": len(MSG), "metrics_overhead": metrics})


if __name__ == "__main__":
    main()
