"""Shared helpers for ``python -m benchmarks.<name>`` scripts (ring, lanes, actions, dataguard).

What a benchmark gets from here:

* ``parser(description)`` -> argparse parser with ``--json PATH`` and ``--quick`` (add your own options).
* ``repeat(fn, runs=3)`` -> :class:`Stat`: calls ``fn()`` (which returns one measured figure, e.g.
  messages per second) ``runs`` times; the median with the min..max range.
* ``Meter`` -- a context manager measuring wall time and CPU seconds (user + system) of this process
  and of its *waited-for* children (``resource.getrusage``); ``Meter.cpu_of(pid)`` reads another
  live process's CPU seconds from ``/proc`` when a child is still running.
* ``percentiles_us(samples_ns)`` -> (p50, p99, p99.9, max) in microseconds.
* ``peak_rss_mb(children=False)`` -> peak resident set size of this process (or of waited children).
* ``Result`` -- one table row / JSON result: ``name``, ``msgs_per_s``, ``p50_us``, ``p99_us``,
  ``p999_us``, ``cpu_s_per_m``, ``rss_mb`` (``None`` where not measured), plus ``range`` (min, max
  of the throughput runs), ``note`` (why a row is not measured, or what it measures) and ``extra``
  (benchmark-specific numbers, kept in JSON only).
* ``print_table(title, results, ratio_to=[...])`` -- a rich table with one ratio column per named
  baseline (``x mp.Queue``, ``% of c_ring``); rows that were not measured show their note.
* ``write_json(path, results, extra=None)`` -> ``{"machine": machine_info(), "results": [...]}``.
* ``markdown_table(results, ratio_to=[...])`` -> the same table as Markdown, for ``docs/``.
* ``machine_info()`` -- CPU model, cores, load average, kernel, Python, byteor version, time.
* ``unlink_quietly(path)`` and ``bench_dir()`` (a private directory under /dev/shm, removed at exit).

Conventions: every figure is measured in the same run as the peers it is compared with (ratios
are what matter; absolute figures vary several-fold between hosts). Keep ``--quick`` to seconds:
CI uses it as a smoke run, never as a pass/fail on speed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Meter",
    "Result",
    "Stat",
    "bench_dir",
    "machine_info",
    "markdown_table",
    "parser",
    "peak_rss_mb",
    "percentiles_us",
    "print_table",
    "repeat",
    "unlink_quietly",
    "write_json",
]


# ---------------------------------------------------------------------------------------------- CLI

def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the two options every benchmark has: ``--json PATH``, ``--quick``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="small N: a smoke run of seconds (CI)")
    return p


# ------------------------------------------------------------------------------------ measurements

@dataclass(frozen=True)
class Stat:
    """Median of several runs, with the range."""

    median: float
    lo: float
    hi: float
    values: tuple[float, ...]

    def spread_pct(self) -> float:
        """(max - min) / median, in percent: how noisy the runs were."""
        return 0.0 if self.median == 0 else 100.0 * (self.hi - self.lo) / self.median


def repeat(fn: Callable[[], float], runs: int = 3) -> Stat:
    """Call ``fn`` ``runs`` times; each call returns one figure (e.g. msgs/s). Median and range."""
    values = tuple(float(fn()) for _ in range(max(1, runs)))
    return Stat(statistics.median(values), min(values), max(values), values)


def _rusage_cpu(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """Wall seconds and CPU seconds (self + waited children) spent inside a ``with`` block.

    Children count only once they have been waited for (``Process.join``, ``subprocess.run``), so
    join worker processes inside the block. ``cpu_s`` is the sum over this process and them.
    """

    def __init__(self) -> None:
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.self_cpu_s = 0.0
        self.children_cpu_s = 0.0

    def __enter__(self) -> Meter:
        self._t0 = time.perf_counter()
        self._s0 = _rusage_cpu(resource.RUSAGE_SELF)
        self._c0 = _rusage_cpu(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.self_cpu_s = _rusage_cpu(resource.RUSAGE_SELF) - self._s0
        self.children_cpu_s = _rusage_cpu(resource.RUSAGE_CHILDREN) - self._c0
        self.cpu_s = self.self_cpu_s + self.children_cpu_s

    @staticmethod
    def cpu_of(pid: int) -> float:
        """CPU seconds (user + system) a live process has used so far, from ``/proc/<pid>/stat``."""
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(")") + 2:].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


def percentiles_us(samples_ns: Sequence[int]) -> tuple[float, float, float, float]:
    """(p50, p99, p99.9, max) of nanosecond samples, in microseconds (nearest-rank)."""
    if not samples_ns:
        raise ValueError("no latency samples")
    s = sorted(samples_ns)
    n = len(s)

    def rank(q: float) -> float:
        return s[min(n - 1, max(0, int(q * n + 0.5) - 1))] / 1000.0

    return rank(0.50), rank(0.99), rank(0.999), s[-1] / 1000.0


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size in MiB of this process (or the largest waited-for child)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return ru.ru_maxrss / 1024.0  # Linux reports KiB


# ------------------------------------------------------------------------------------------ results

@dataclass
class Result:
    """One benchmark row. ``None`` means not measured (``note`` says why)."""

    name: str
    msgs_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    p999_us: float | None = None
    cpu_s_per_m: float | None = None
    rss_mb: float | None = None
    range: tuple[float, float] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def not_measured(cls, name: str, why: str) -> Result:
        return cls(name=name, note=f"not measured: {why}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "msgs_per_s": _round(self.msgs_per_s),
            "p50_us": _round(self.p50_us),
            "p99_us": _round(self.p99_us),
            "p999_us": _round(self.p999_us),
            "cpu_s_per_m": _round(self.cpu_s_per_m),
            "rss_mb": _round(self.rss_mb),
        }
        if self.range is not None:
            out["msgs_per_s_range"] = [_round(self.range[0]), _round(self.range[1])]
        if self.note:
            out["note"] = self.note
        if self.extra:
            out["extra"] = self.extra
        return out


def _round(v: float | None) -> float | None:
    if v is None:
        return None
    return float(f"{v:.4g}") if abs(v) < 1000 else round(v, 1)


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, load, kernel, Python, byteor version, time."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        from importlib import metadata

        byteor_version = metadata.version("byteor")
    except metadata.PackageNotFoundError:  # a benchmark still runs from a plain source tree
        byteor_version = "unknown"
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "byteor": byteor_version,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with contextlib.suppress(OSError):
        st = os.statvfs("/dev/shm")
        info["dev_shm_free_mb"] = st.f_bavail * st.f_frsize // (1024 * 1024)
    return info


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k/s"
    return f"{v:.0f} /s"


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_table(title: str, results: Sequence[Result], ratio_to: Sequence[str] = ()) -> None:
    """Print a rich table: throughput (median, and the min..max spread of the runs), one ratio
    column per baseline named in ``ratio_to`` (``-`` when either side is not measured), latency
    p50/p99/p99.9, CPU seconds per million messages, RSS, and the note."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    by_name = {r.name: r for r in results}
    table = Table(title=escape(title), title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("msgs/s", justify="right", no_wrap=True)
    table.add_column("spread", justify="right", no_wrap=True)
    for base in ratio_to:
        table.add_column(escape(f"vs {base}"), justify="right", no_wrap=True)
    table.add_column("p50/p99/p99.9 us", justify="right", no_wrap=True)
    table.add_column("CPU s/M", justify="right", no_wrap=True)
    table.add_column("RSS MB", justify="right", no_wrap=True)
    table.add_column("note", max_width=48)
    for r in results:
        spread = "-"
        if r.range is not None and r.msgs_per_s:
            spread = f"{100.0 * (r.range[1] - r.range[0]) / r.msgs_per_s:.0f}%"
        ratios = []
        for base in ratio_to:
            b = by_name.get(base)
            if r.msgs_per_s is None or b is None or not b.msgs_per_s:
                ratios.append("-")
            else:
                ratios.append(f"{r.msgs_per_s / b.msgs_per_s:.2f}x")
        lat = "-" if r.p50_us is None else f"{_fmt(r.p50_us)} / {_fmt(r.p99_us)} / {_fmt(r.p999_us)}"
        table.add_row(escape(r.name), _fmt_rate(r.msgs_per_s), spread, *ratios, lat, _fmt(r.cpu_s_per_m, 2),
                      _fmt(r.rss_mb), escape(r.note))
    Console(width=max(100, shutil.get_terminal_size((200, 40)).columns)).print(table)


def markdown_table(results: Sequence[Result], ratio_to: Sequence[str] = ()) -> str:
    """The rows of :func:`print_table` as a Markdown table (for pasting into ``docs/``)."""
    by_name = {r.name: r for r in results}
    head = ["name", "msgs/s", "spread", *(f"vs {b}" for b in ratio_to), "p50 / p99 / p99.9 us", "CPU s/M",
            "RSS MB", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h not in ("name", "note") else "---"
                                                           for h in head) + "|"]
    for r in results:
        spread = "-"
        if r.range is not None and r.msgs_per_s:
            spread = f"{100.0 * (r.range[1] - r.range[0]) / r.msgs_per_s:.0f}%"
        ratios = []
        for base in ratio_to:
            b = by_name.get(base)
            if r.msgs_per_s is None or b is None or not b.msgs_per_s:
                ratios.append("-")
            else:
                ratios.append(f"{r.msgs_per_s / b.msgs_per_s:.2f}x")
        lat = "-" if r.p50_us is None else f"{_fmt(r.p50_us)} / {_fmt(r.p99_us)} / {_fmt(r.p999_us)}"
        cells = [f"`{r.name}`", _fmt_rate(r.msgs_per_s), spread, *ratios, lat, _fmt(r.cpu_s_per_m, 3),
                 _fmt(r.rss_mb), r.note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(path: str, results: Sequence[Result], extra: dict[str, Any] | None = None) -> None:
    """Write ``{"machine": ..., "results": [...]}`` (plus ``extra`` top-level keys) to ``path``."""
    doc: dict[str, Any] = {"machine": machine_info(), "results": [r.to_json() for r in results]}
    if extra:
        doc.update(extra)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")


# ------------------------------------------------------------------------------------------- files

def unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


_BENCH_DIRS: list[str] = []


def bench_dir() -> str:
    """A private directory under /dev/shm (falls back to the temp dir) removed when the run exits."""
    if not _BENCH_DIRS:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        _BENCH_DIRS.append(tempfile.mkdtemp(prefix="byteor-bench-", dir=base))
        atexit.register(shutil.rmtree, _BENCH_DIRS[0], True)
    return _BENCH_DIRS[0]
