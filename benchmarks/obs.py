"""``python -m benchmarks.obs``: what ``--metrics`` costs the rings and lanes it watches.

Representative rows of ``benchmarks.ring`` and ``benchmarks.lanes``, each measured with metrics off
and on, alternating, in the same run (:func:`benchmarks._metrics.overhead_rows`):

* ``ring.publish_many``: this process publishes batches of 256 64-byte messages into a SingleRing
  ring; one identity stage (C, ``run_builtin``) and an egress cell (``count_sink``) in child processes;
* ``ring.chain3``: the same through three add_u8 stages in a chain (the ``examples/chain.kv`` shape);
* ``lanes.events``: this process into an ``events`` lane, one subscriber (``count_sink``);
* ``lanes.fanout_2``: a ``fanout`` lane with two subscriber processes.

"Metrics on" is what ``run --metrics`` runs in the session's process (here: the producer's): the
metrics server over an observer of the ring directory (which holds a ``counters.bin`` and a
``session_state.json`` like a real run's), scraped once a second over HTTP. Rows are timed from the
first publish to the moment the last subscriber counted its last message (CLOCK_MONOTONIC stamps
from the subscribers). Goal: every ``+metrics`` row within 2% of its metrics-off row (ratio >= 0.98).
On a 2-core machine shared with other work, the spread of the runs is the noise floor: read the
ratio next to the spread columns.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from typing import Any

from benchmarks._common import Result, bench_dir, parser, print_table, write_json
from benchmarks._metrics import metrics_load, overhead_rows, scrape_cost_ms
from byteor import _native
from byteor.lanes.shm import LaneSpec, create_lane, lane_file
from byteor.obs import counters
from byteor.runtime.session_state import write_session_state
from byteor.shm import attach_ring, create_ring

HASH_HEX = "cd" * 32
MSG = b"o" * 64
BATCH = 256
CAPACITY = 65536
WAIT = _native.WAIT_BACKOFF
GOAL = 0.98


def _sink(path: str, c: int, q: Any) -> None:
    ring = attach_ring(path)
    counted = ring.count_sink(c, WAIT)
    q.put((*counted, time.clock_gettime(time.CLOCK_MONOTONIC)))
    ring.close()


def _stage(path: str, c: int, op: int) -> None:
    ring = attach_ring(path)
    ring.run_builtin(c, op, 1, WAIT)
    ring.close()


def _run_files(directory: str, name: str, stages: list[str]) -> None:
    """A run's observer files next to the ring: counters rows and a session state."""
    table = counters.CountersFile.create(counters.counters_path(directory),
                                         [("session", counters.KIND_SESSION, 0),
                                          *((s, counters.KIND_STAGE, 0) for s in stages)])
    for i in range(len(stages)):
        table.row(1 + i).set(counters.WORDS["state"], counters.RUNNING)
    table.close()
    now = int(time.time() * 1000)
    write_session_state(directory, {"name": name, "spec_hash": "sha256:" + HASH_HEX, "target": "SingleRing",
                                    "executor": "mp", "posture": "dev", "pid": os.getpid(),
                                    "started_unix_ms": now, "updated_unix_ms": now, "ring_path": directory,
                                    "journal_dir": None, "messages_in": 0, "messages_out": 0, "dropped": 0,
                                    "sources": [], "sinks": []})


def _drive(path: str, n: int, children: list[tuple[Any, tuple[Any, ...]]], q: Any, n_sinks: int, *,
           watch: str | None) -> float:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=t, args=a) for t, a in children]
    for p in procs:
        p.start()
    ring = attach_ring(path)
    time.sleep(0.3)  # the children attach and wait
    batch = [MSG] * BATCH
    with metrics_load(watch) if watch else _nothing():
        t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        for _ in range(n // BATCH):
            ring.publish_many(batch, WAIT)
        ring.request_stop()
        counts = [q.get(timeout=600) for _ in range(n_sinks)]
    elapsed = max(c[2] for c in counts) - t0
    for p in procs:
        p.join(60)
    ring.close()
    expected = (n // BATCH) * BATCH
    if any(c[0] != expected for c in counts):
        raise RuntimeError(f"lost messages: {counts} != {expected}")
    return expected / elapsed


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def ring_row(n: int, stages: int, metrics: bool) -> float:
    root = tempfile.mkdtemp(dir=bench_dir())
    path = os.path.join(root, "shard-0.ring")
    deps = [0] + [1 << (i - 1) for i in range(1, stages)]
    deps.append(1 << (stages - 1))  # egress after the last stage
    ring = create_ring(path, capacity=CAPACITY, slot_bytes=128, deps=deps, spec_hash=HASH_HEX)
    _run_files(root, "bench-obs", [f"s{i}" for i in range(stages)])
    q = mp.get_context("spawn").Queue()
    op = _native.OP_ADD_U8 if stages > 1 else _native.OP_IDENTITY
    try:
        children: list[tuple[Any, tuple[Any, ...]]] = [(_stage, (path, i, op)) for i in range(stages)]
        children.append((_sink, (path, stages, q)))
        return _drive(path, n, children, q, 1, watch=root if metrics else None)
    finally:
        ring.close()
        shutil.rmtree(root, ignore_errors=True)


def lane_row(n: int, kind: str, cells: int, metrics: bool) -> float:
    root = tempfile.mkdtemp(dir=bench_dir())
    ring = create_lane(root, LaneSpec("l", kind, CAPACITY, 128, cells), "sha256:" + HASH_HEX)
    path = lane_file(root, "l", kind)
    _run_files(root, "bench-obs-lanes", [])
    q = mp.get_context("spawn").Queue()
    try:
        return _drive(path, n, [(_sink, (path, c, q)) for c in range(cells)], q, cells,
                      watch=root if metrics else None)
    finally:
        ring.close()
        shutil.rmtree(root, ignore_errors=True)


def _scrape_target() -> str:
    """A chain-shaped run's files (a ring with three stages and egress, counters, session state)."""
    root = tempfile.mkdtemp(dir=bench_dir())
    ring = create_ring(os.path.join(root, "shard-0.ring"), capacity=CAPACITY, slot_bytes=128, deps=[0, 1, 2, 4],
                       spec_hash=HASH_HEX)
    ring.close()
    _run_files(root, "bench-obs", ["s0", "s1", "s2"])
    return root


FAMILIES = ("ring", "lanes")


def overhead_report(families: tuple[str, ...], *, quick: bool, runs: int | None = None) -> dict[str, Any]:
    """Measure, print and return the metrics on/off rows of ``families`` (``ring``, ``lanes``).

    ``benchmarks.ring --metrics`` and ``benchmarks.lanes --metrics`` call this for their own family,
    so each prints its rows with metrics off and on from the same run."""
    # each timed run lasts a second or more: a scrape a second is then a real share of it, and one
    # scheduler hiccup on this 2-core machine does not decide the ratio
    n_ring = 1_000_000 if quick else 30_000_000
    n_lane = 5_000_000 if quick else 100_000_000
    runs = runs or (1 if quick else 5)
    results: list[Result] = []
    if "ring" in families:
        results += overhead_rows("ring.publish_many", lambda m: ring_row(n_ring, 1, m), runs)
        results += overhead_rows("ring.chain3", lambda m: ring_row(n_ring, 3, m), runs)
    if "lanes" in families:
        results += overhead_rows("lanes.events", lambda m: lane_row(n_lane, "events", 1, m), runs)
        results += overhead_rows("lanes.fanout_2", lambda m: lane_row(n_lane, "fanout", 2, m), runs)
    print_table(f"metrics overhead (ring rows {n_ring:,}, lane rows {n_lane:,} messages per run, median of "
                f"{runs}; ratio = on / off)", results)
    ratios = {r.name.removesuffix("+metrics"): r.extra["ratio"] for r in results if "ratio" in r.extra}
    best = {r.name.removesuffix("+metrics"): r.extra["best_ratio"] for r in results if "best_ratio" in r.extra}
    for name, ratio in ratios.items():
        print(f"{name}: metrics on / off = {ratio:.3f} median, {best[name]:.3f} best runs "
              f"({'ok' if ratio >= GOAL else 'MISSED'}, goal >= {GOAL})")
    return {"results": results, "ratios": ratios, "best_ratios": best, "goal": GOAL,
            "missed": [name for name, ratio in ratios.items() if ratio < GOAL], "n_ring": n_ring,
            "n_lane": n_lane, "runs": runs}


def overhead_json(family: str, quick: bool) -> dict[str, Any]:
    """:func:`overhead_report` for one family, with its rows as JSON (the ``--metrics`` option of
    ``benchmarks.ring`` and ``benchmarks.lanes``)."""
    report = overhead_report((family,), quick=quick)
    report["results"] = [r.to_json() for r in report["results"]]
    return report


def main(argv: list[str] | None = None) -> int:
    ap = parser("metrics on vs off for representative ring and lane rows (same run)")
    ap.add_argument("--runs", type=int, default=None, help="runs per row and setting (default 5, --quick 1)")
    args = ap.parse_args(argv)
    report = overhead_report(FAMILIES, quick=args.quick, runs=args.runs)
    cost = scrape_cost_ms(_scrape_target(), 50 if args.quick else 300)
    print(f"one scrape (observe + render) costs {cost:.2f} ms of CPU in the run's process: at 1 scrape/s "
          f"{cost / 10:.3f}% of one core, at the usual 15 s interval {cost / 150:.4f}%")
    if args.json:
        results = report.pop("results")
        write_json(args.json, results, extra={**report, "scrape_cpu_ms": round(cost, 3)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
