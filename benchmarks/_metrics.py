"""Metrics on or off for a benchmark row: the run's metrics thread against a pipeline's files.

``with metrics_load(path):`` starts what ``run --metrics`` starts in the session's process (an
:class:`~byteor.runtime.observe.Observer` on ``path`` served by :class:`~byteor.obs.metrics.MetricsServer`
on 127.0.0.1) in *this* process, which in the benchmarks is the producer's, plus a scraper thread
that GETs ``/metrics`` every ``scrape_every`` seconds (default 1 s, the scrape interval the tests'
Prometheus uses; real deployments scrape every 15 s). ``path`` is a ring file, a directory of ring
or lane files, or a run's ring/lane directory; whatever of the run's files is there is read.

How a benchmark row measures the overhead (``benchmarks.obs`` does exactly this)::

    from benchmarks._metrics import metrics_load, overhead_rows

    def row(metrics: bool) -> float:            # one timed run, returns msgs/s
        path = make_ring_or_lanes()
        with metrics_load(path) if metrics else contextlib.nullcontext():
            return drive(path)

    results += overhead_rows("byteor.publish_many", row, runs)   # "...", "...+metrics", ratio in note
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from benchmarks._common import Result

__all__ = ["MetricsLoad", "metrics_load", "overhead_rows", "scrape_cost_ms"]


@dataclass
class MetricsLoad:
    """What a :func:`metrics_load` block did: the address served and how many scrapes it answered."""

    address: str = ""
    scrapes: int = 0
    bytes_per_scrape: int = 0


@contextlib.contextmanager
def metrics_load(path: str, *, scrape_every: float = 1.0) -> Iterator[MetricsLoad]:
    """Serve metrics for ``path`` and scrape them for the life of the block (see the module docstring)."""
    from byteor.obs.metrics import MetricsServer
    from byteor.runtime.observe import Observer

    observer = Observer(path)
    lock = threading.Lock()

    def observe() -> dict[str, object]:
        with lock:
            return observer.observe()

    server = MetricsServer("127.0.0.1", 0, observe, process_metrics=True)
    host, port = server.start()
    load = MetricsLoad(address=f"{host}:{port}")
    stop = threading.Event()

    def scrape() -> None:
        url = f"http://{load.address}/metrics"
        while not stop.wait(scrape_every):
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as resp:
                body = resp.read()
                load.scrapes += 1
                load.bytes_per_scrape = len(body)

    scraper = threading.Thread(target=scrape, name="bench-scraper", daemon=True)
    scraper.start()
    try:
        yield load
    finally:
        stop.set()
        scraper.join(timeout=10)
        server.stop()
        observer.close()


def overhead_rows(name: str, run: Callable[[bool], float], runs: int) -> list[Result]:
    """Measure ``run(metrics)`` with metrics off and on, alternating (off, on, off, on, ...) so both
    see the same machine; two rows (``name``, ``name+metrics``) with medians and ranges. The second
    row has ``extra["ratio"]`` (median on / median off) and ``extra["best_ratio"]`` (best on / best
    off: on a machine shared with other work the best run of each is the one least disturbed)."""
    off: list[float] = []
    on: list[float] = []
    for _ in range(max(1, runs)):
        off.append(run(False))
        on.append(run(True))
    r_off = Result(name=name, msgs_per_s=statistics.median(off), range=(min(off), max(off)),
                   note="metrics off")
    r_on = Result(name=f"{name}+metrics", msgs_per_s=statistics.median(on), range=(min(on), max(on)))
    ratio = (r_on.msgs_per_s or 0.0) / r_off.msgs_per_s if r_off.msgs_per_s else 0.0
    best = max(on) / max(off) if max(off) else 0.0
    r_on.extra["ratio"] = round(ratio, 4)
    r_on.extra["best_ratio"] = round(best, 4)
    r_on.note = f"metrics served and scraped: {ratio:.3f}x of off (best runs {best:.3f}x)"
    return [r_off, r_on]


def scrape_cost_ms(path: str, scrapes: int = 200) -> float:
    """CPU milliseconds one scrape of ``path`` costs the process that serves it (observe + render,
    without HTTP): at one scrape a second, this many ms per second of one core is the most the
    metrics can take from the run's process, whatever the noise of the machine."""
    import time

    from byteor.obs.metrics import render
    from byteor.runtime.observe import Observer

    with Observer(path) as observer:
        render(observer.observe)  # attach the files once, as the server does
        t0 = time.process_time()
        for _ in range(scrapes):
            render(observer.observe)
        return (time.process_time() - t0) * 1000.0 / scrapes
