"""Verbs ``run`` and ``snapshot``.

``run`` parses its options into a :class:`~byteor.runtime.session.RunSession` (which validates,
gates, resolves and runs the pipeline), feeds it from one source (``--input-hex`` /
``--input-ascii``, or a stream ``--input=FILE|-`` with ``--input-format``) into one sink (stdout or
``--output-file`` in ``--output`` framing), shows a progress line on a terminal and prints the
summary. SIGINT/SIGTERM stop reading input, drain everything already taken to the output, exit 0.

``snapshot`` reads a running (or left-over) ring's header and cursors without touching the hot path.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from .._errors import UsageError
from ..edges import INPUT_FORMATS, OUTPUT_FORMATS, CollectSink, FileSink, FileSource, IterableSource, Sink, Source
from ..edges.framing import parse_hex
from ..obs import LOG_FORMATS, emit, mask_value
from ..ops.runtime_config import RuntimeConfig, read_runtime_config
from ..runtime.session import WAITS, RunOptions, RunSession
from ..runtime.session_state import read_session_state
from ._common import add_env_option, add_json_option, add_spec_option, emit_json, posture, spec_path, stdout_console

__all__ = ["configure", "run"]

PROFILES = ("default", "low-latency", "isolated-core")
FSYNCS = ("none", "segment", "always")


# ==================================================================================================
# Options
# ==================================================================================================


def configure(parser: argparse.ArgumentParser, verb_name: str) -> None:
    if verb_name == "snapshot":
        _configure_snapshot(parser)
        return
    add_spec_option(parser)
    if parser.prog.startswith("byteor-dataguard"):
        parser.add_argument("--mode", choices=("mapkv", "row"), default=None,
                            help="payload codec of every dataguard:<profile> stage, overriding the "
                                 "profile's `mode` (default: the profile's)")
    parser.add_argument("--sp", action="store_true",
                        help="run in this one process, stages in index order (deterministic bring-up)")
    src = parser.add_argument_group("input (one of)")
    src.add_argument("--input-hex", metavar="HEX", help="one message given as hex")
    src.add_argument("--input-ascii", metavar="TEXT", help="one message given as text (UTF-8)")
    src.add_argument("--input", metavar="FILE|-",
                     help="a stream of messages from a file or stdin (default: -)")
    parser.add_argument("--input-format", choices=INPUT_FORMATS, default="lines",
                        help="lines: one message per line; hex: one hex message per line; "
                             "len32: u32 little-endian length before each message (default lines)")
    parser.add_argument("--output", choices=OUTPUT_FORMATS, default="hex",
                        help="hex (one lowercase hex message per line, default), ascii (text per line), "
                             "raw (bytes as they are), lines (bytes + newline)")
    parser.add_argument("--output-file", metavar="FILE", help="write output messages here instead of stdout")
    parser.add_argument("--ring-path", metavar="DIR",
                        help="directory of the ring files (default /dev/shm/byteor/<name>-<hash8>/)")
    parser.add_argument("--lane-path", metavar="DIR", help="LaneGraph: directory of the lane files and state")
    parser.add_argument("--wait", choices=WAITS, default=None,
                        help="how waiting stages wait: spin, yield, backoff (default), "
                             "block (futex: an idle pipeline uses no CPU); overrides the profile's")
    parser.add_argument("--tuning", choices=PROFILES, default=None,
                        help="tuning profile applied in every runtime process: default, low-latency "
                             "(spin, pinned, mlockall), isolated-core (+ isolated CPU, SCHED_FIFO); each "
                             "knob is reported Applied/Degraded/Failed on stderr and in runtime_config.txt")
    parser.add_argument("--config", metavar="FILE",
                        help="runtime_config.txt (key=value): runtime.tuning, runtime.wait, runtime.env, "
                             "runtime.ring_path, runtime.lane_path, runtime.journal_dir, "
                             "runtime.journal_fsync, ...; defaults for the options not given here")
    parser.add_argument("--journal-dir", metavar="DIR",
                        help="LaneGraph: where journal lanes live (default $BYTEOR_JOURNAL_DIR/<name>-<hash8>, "
                             "else /var/tmp/byteor/<name>-<hash8>/journal). SingleRing: record every message "
                             "the run takes into the journal DIR/<ingress>, for incident bundles and replay")
    parser.add_argument("--fsync", choices=FSYNCS, default=None,
                        help="journal durability: none, segment, always "
                             "(default $BYTEOR_JOURNAL_FSYNC, else none)")
    add_env_option(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="suppress every side effect and record it instead")
    parser.add_argument("--approval", metavar="PATH|CREDENTIAL",
                        help="approval credential (default: approval.cred next to the spec)")
    parser.add_argument("--approval-key-set", metavar="FILE",
                        help="signing key set (default: signing_keys.json next to the spec)")
    parser.add_argument("--policy-file", metavar="FILE",
                        help="operator policy file overriding the default decision table")
    parser.add_argument("--policy-audit", metavar="FILE",
                        help="where the policy audit record of a run with side-effect stages goes "
                             "(default: policy_audit-<hash8>.json next to the spec, else "
                             "/var/tmp/byteor/<name>-<hash8>/policy_audit.json)")
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz) "
                             "there while the run lasts (multi-process runs; default runtime.metrics)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                        help="lifecycle events on stderr as text lines (default) or one JSON object per "
                             "line (default runtime.log_format)")
    add_json_option(parser)


def _configure_snapshot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ring-path", metavar="PATH",
                        help="a ring file, or a ring directory (every shard-<k>.ring in it)")
    parser.add_argument("--lane-path", metavar="DIR",
                        help="a LaneGraph lane directory (lane_graph_state.json)")
    parser.add_argument("--out", metavar="FILE", help="also write single_ring_snapshot.json (one ring) here")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    if args.verb == "snapshot":
        return _snapshot(args)
    return _run(args)


# ==================================================================================================
# Input and output
# ==================================================================================================


def _one_shot(args: argparse.Namespace) -> list[bytes] | None:
    given = [n for n in ("input_hex", "input_ascii", "input") if getattr(args, n) is not None]
    if len(given) > 1:
        names = ", ".join("--" + n.replace("_", "-") for n in given)
        raise UsageError(f"give only one input: {names}")
    if args.input_hex is not None:
        return [parse_hex(args.input_hex, "--input-hex")]
    if args.input_ascii is not None:
        return [args.input_ascii.encode("utf-8", "surrogateescape")]  # undecodable argv bytes round-trip
    return None


def _source(args: argparse.Namespace, one_shot: list[bytes] | None) -> Source:
    if one_shot is not None:
        return IterableSource(one_shot, name="command line")
    return FileSource(args.input or "-", args.input_format, label="--input")


def _sink(args: argparse.Namespace) -> Sink:
    if args.output_file:
        return FileSink(args.output_file, args.output, label="--output-file")
    if args.json:
        return CollectSink(as_hex=True, name="summary")
    return FileSink("-", args.output, label="stdout")


# ==================================================================================================
# Progress
# ==================================================================================================


class _Progress:
    """A live line on stderr (TTY only): messages in/out, rate, ring fill."""

    def __init__(self, stats: Callable[[], tuple[int, int, float | None]]) -> None:
        self._stats = stats
        self._t0 = time.monotonic()
        self._live: Any = None

    def _render(self) -> Any:
        from rich.text import Text

        n_in, n_out, fill = self._stats()
        dt = max(time.monotonic() - self._t0, 1e-9)
        text = f"in {n_in:,}  out {n_out:,}  {n_out / dt:,.0f} msg/s"
        if fill is not None:
            text += f"  ring fill {fill:.0%}"
        return Text(text)

    def __enter__(self) -> _Progress:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(get_renderable=self._render, console=Console(stderr=True),
                              refresh_per_second=4, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()


# ==================================================================================================
# run
# ==================================================================================================


class _Signals:
    """SIGINT/SIGTERM: the first stops reading input (the session drains what it took); a second
    one while draining stops at once (stages are killed, files removed; exit 130)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.name: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name
        self.stop.set()

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    """``--config=FILE`` (bad file: exit 2 naming line and key); its values become the defaults of
    the options not given on the command line (command line > config file > environment > default)."""
    if args.config is None:
        return RuntimeConfig()
    cfg = read_runtime_config(args.config)
    for attr, value in (("env", cfg.env), ("ring_path", cfg.ring_path), ("lane_path", cfg.lane_path),
                        ("journal_dir", cfg.journal_dir), ("fsync", cfg.journal_fsync)):
        if getattr(args, attr) is None and value is not None:
            setattr(args, attr, value)
    return cfg


def options_from_args(args: argparse.Namespace, cfg: RuntimeConfig) -> RunOptions:
    """The run session's options from ``run``'s command line (shared with ``byteor-edgeplane run``)."""
    extra: dict[str, Any] = {}
    if getattr(args, "mode", None):
        extra["dataguard_mode"] = args.mode
    return RunOptions(sp=args.sp, posture=posture(args), dry_run=args.dry_run, approval=args.approval,
                      approval_key_set=args.approval_key_set, policy_file=args.policy_file,
                      policy_audit=args.policy_audit, ring_path=args.ring_path, lane_path=args.lane_path,
                      journal_dir=args.journal_dir, fsync=args.fsync, wait=args.wait, tuning=args.tuning,
                      tune=True, config=cfg, extra=extra, metrics=getattr(args, "metrics", None),
                      log_format=getattr(args, "log_format", None))


def _run(args: argparse.Namespace) -> int:
    one_shot = _one_shot(args)  # bad --input-hex: exit 2 before anything else
    cfg = _runtime_config(args)
    session = RunSession(spec_path(args), options_from_args(args, cfg))
    sink = _sink(args)
    with session, _Signals() as signals:
        session.start(sink)
        live = _Progress(session.stats) if one_shot is None else contextlib.nullcontext()
        # stdout carries the output messages: a --sp stage's own prints go to stderr, as in MP
        with live, contextlib.redirect_stdout(sys.stderr):
            session.run(_source(args, one_shot), stop=signals.stop)
        session.stopped_by = signals.name
    summary = session.summary()
    if isinstance(sink, CollectSink):
        summary["outputs"] = sink.items
    _finish(args, summary, one_shot is not None)
    return 0


def _finish(args: argparse.Namespace, summary: dict[str, Any], one_shot: bool) -> None:
    if args.json:
        emit_json(summary)
        return
    counts = summary["side_effect_counts"]
    if one_shot and not counts["total"]:
        return
    rate = summary["messages_out"] / summary["elapsed_s"] if summary["elapsed_s"] > 0 else 0.0
    line = (f"byteor run: {summary['messages_in']:,} in, {summary['messages_out']:,} out, "
            f"{summary['dropped']:,} dropped in {summary['elapsed_s']:.3f} s ({rate:,.0f} msg/s); "
            f"executor {summary['executor']}")
    if summary.get("shards", 1) > 1:
        line += f", {summary['shards']} shards"
    if summary["tuning"]["profile"] is not None:
        line += f", tuning {summary['tuning']['profile']}"
    if summary.get("restarts"):
        line += ", restarts " + ", ".join(f"{k}: {v}" for k, v in summary["restarts"].items())
    if summary.get("stopped_by"):
        line += f"; stopped by {summary['stopped_by']} (drained)"
    if counts["total"]:
        by = counts["by_decision"]
        line += f"; {counts['total']:,} side effect(s): " + ", ".join(f"{n:,} {d}" for d, n in by.items())
        if counts["records_omitted"]:
            line += f" ({counts['records_kept']:,} dry-run records kept, {counts['records_omitted']:,} counted only)"
    if summary.get("journal"):
        line += f"; ingress journal {summary['journal']}"
    if summary.get("policy_audit"):
        line += f"; policy audit {summary['policy_audit']}"
    emit("run.summary", line.removeprefix("byteor run: "), who="byteor run", messages_in=summary["messages_in"],
         messages_out=summary["messages_out"], dropped=summary["dropped"], elapsed_s=summary["elapsed_s"],
         executor=summary["executor"], restarts=summary.get("restarts") or {},
         stopped_by=summary.get("stopped_by"), side_effects=counts["by_decision"])


# ==================================================================================================
# snapshot
# ==================================================================================================


def _snapshot(args: argparse.Namespace) -> int:
    if bool(args.ring_path) == bool(args.lane_path):
        raise UsageError("snapshot needs exactly one of --ring-path=PATH or --lane-path=DIR")
    from ..runtime._tuning import read_tuning

    if args.lane_path:
        return _lane_snapshot(args, read_tuning(args.lane_path))
    from ..runtime.snapshot import render_snapshots, ring_snapshots

    snaps = ring_snapshots(args.ring_path)
    tuning = read_tuning(args.ring_path)
    session = mask_value(read_session_state(args.ring_path))
    if args.out:
        if len(snaps) != 1:
            raise UsageError(f"--out writes one ring's snapshot; {args.ring_path} holds {len(snaps)} rings")
        from ..shm import write_ring_snapshot

        write_ring_snapshot(args.out, snaps[0])
    if args.json:
        emit_json({"rings": [s.to_json() for s in snaps], "tuning": tuning, "session": session})
    else:
        console = stdout_console()
        if session is not None:
            console.print(_session_table(session))
        for renderable in render_snapshots(snaps):
            console.print(renderable)
        if tuning is not None:
            console.print(_tuning_table(tuning))
    return 0


def _session_table(session: dict[str, Any]) -> Any:
    """The run's identity and its edges (session_state.json), one row per source and sink."""
    from rich.table import Table
    from rich.text import Text

    title = (f"{session['name']} {session['spec_hash'][:15]}  {session['target']} {session['executor']}  "
             f"posture {session['posture']}  pid {session['pid']}  in {session['messages_in']:,}  "
             f"out {session['messages_out']:,}  dropped {session['dropped']:,}")
    table = Table(title=title, title_justify="left")
    for col in ("edge", "endpoint", "name", "details"):
        table.add_column(col)
    for kind in ("sources", "sinks"):
        for entry in session[kind]:
            details = ", ".join(f"{k}={v}" for k, v in entry.items() if k not in ("endpoint", "name"))
            table.add_row(Text(kind[:-1]), Text(str(entry.get("endpoint", ""))), Text(str(entry.get("name", ""))),
                          Text(details))
    return table


def _tuning_table(tuning: dict[str, list[dict[str, str]]]) -> Any:
    """The effective tuning recorded in runtime_config.txt: one row per role and knob."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="tuning (runtime_config.txt)")
    for col in ("role", "knob", "requested", "applied", "state", "reason"):
        table.add_column(col)
    styles = {"Applied": "green", "Degraded": "yellow", "Failed": "red"}
    for role, knobs in sorted(tuning.items()):
        for k in knobs:
            state = k["state"]
            table.add_row(Text(role), Text(k["knob"]), Text(k["requested"]), Text(k["applied"]),
                          Text(state, style=styles.get(state, "")), Text(k["reason"]))
    return table


def _lane_snapshot(args: argparse.Namespace, tuning: dict[str, list[dict[str, str]]] | None) -> int:
    from ..runtime.lanegraph import lane_snapshot, render_state

    state = lane_snapshot(args.lane_path)
    session = mask_value(read_session_state(args.lane_path))
    if args.json:
        out = {**state, "tuning": tuning} if tuning is not None else dict(state)
        if session is not None:
            out["session"] = session
        emit_json(out)
    else:
        console = stdout_console()
        if session is not None:
            console.print(_session_table(session))
        for renderable in render_state(state):
            console.print(renderable)
        if tuning is not None:
            console.print(_tuning_table(tuning))
    return 0
