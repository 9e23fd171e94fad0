"""Verbs ``run`` and ``snapshot``.

``run`` validates the spec, gates side effects through the policy engine, resolves every stage once,
then runs the pipeline: ``--sp`` in this process (deterministic reference order), otherwise the
multi-process executor (one process per stage per shard over shared-memory rings). One-shot input
(``--input-hex`` / ``--input-ascii``) or a stream (``--input=FILE|-`` with ``--input-format``).
SIGINT/SIGTERM stop reading input, drain everything already published to the output, and exit 0.

``snapshot`` reads a running (or left-over) ring's header and cursors without touching the hot path.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO, Any

from .._errors import PolicyRefused, UnsupportedSpecError, UsageError
from .._stage import StageContext
from ..ops.runtime_config import RuntimeConfig
from ..runtime._events import EventLog
from ..runtime._tuning import TuningPlan, knobs_json, tune_this_process
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from ._common import (
    LoadedSpec,
    add_env_option,
    add_json_option,
    add_spec_option,
    emit_json,
    load_spec,
    posture,
    stdout_console,
)

__all__ = ["configure", "run"]

INPUT_FORMATS = ("lines", "hex", "len32")
OUTPUT_FORMATS = ("hex", "ascii", "raw", "lines")
WAITS = ("spin", "yield", "backoff", "block")
PROFILES = ("default", "low-latency", "isolated-core")
FSYNCS = ("none", "segment", "always")
SIDE_EFFECT_FAMILIES = ("http_post", "exec")
AUDIT_FALLBACK_ROOT = "/var/tmp/byteor"


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
                             "else /var/tmp/byteor/<name>-<hash8>/journal)")
    parser.add_argument("--fsync", choices=FSYNCS, default=None,
                        help="LaneGraph journal durability: none, segment, always "
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


class _StopInput(Exception):
    """Raised from the signal handler to interrupt a blocking read of the input."""


class _RunState:
    """Shared between the main loop and the signal handler."""

    def __init__(self) -> None:
        self.stop = False
        self.reading = False
        self.signal: str | None = None


def _parse_hex(text: str, what: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        bad = next((c for c in cleaned if c not in "0123456789abcdefABCDEF"), None)
        why = (f"invalid character {bad!r}" if bad is not None else
               f"odd number of hex digits ({len(cleaned)})")
        raise UsageError(f"{what} is not valid hex: {why}") from None


def _one_shot(args: argparse.Namespace) -> list[bytes] | None:
    given = [n for n in ("input_hex", "input_ascii", "input") if getattr(args, n) is not None]
    if len(given) > 1:
        names = ", ".join("--" + n.replace("_", "-") for n in given)
        raise UsageError(f"give only one input: {names}")
    if args.input_hex is not None:
        return [_parse_hex(args.input_hex, "--input-hex")]
    if args.input_ascii is not None:
        return [args.input_ascii.encode("utf-8", "surrogateescape")]  # undecodable argv bytes round-trip
    return None


def _open_input(name: str) -> IO[bytes]:
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise UsageError(f"--input file not found: {name}") from None
    except OSError as exc:
        raise UsageError(f"--input {name}: {exc.strerror}") from None


def _read_stream(fh: IO[bytes], fmt: str, state: _RunState) -> Iterator[bytes]:
    """Yield the messages of ``fh``; ``state.reading`` is True only while blocked in a read."""
    if fmt == "len32":
        offset = 0
        while True:
            state.reading = True
            head = fh.read(4)
            state.reading = False
            if not head:
                return
            if len(head) < 4:
                raise UsageError(f"--input len32: truncated length prefix at byte {offset}")
            (n,) = struct.unpack("<I", head)
            state.reading = True
            body = fh.read(n)
            state.reading = False
            if len(body) < n:
                raise UsageError(f"--input len32: message at byte {offset} announces {n} bytes, "
                                 f"only {len(body)} follow")
            offset += 4 + n
            yield body
    lineno = 0
    while True:
        state.reading = True
        line = fh.readline()
        state.reading = False
        if not line:
            return
        lineno += 1
        if line.endswith(b"\n"):
            line = line[:-1]
        if fmt == "hex":
            text = line.decode("ascii", "replace").strip()
            if not text:
                continue
            yield _parse_hex(text, f"--input line {lineno}")
        else:
            yield line


def _encoder(fmt: str) -> Callable[[bytes], bytes]:
    if fmt == "hex":
        return lambda b: b.hex().encode("ascii") + b"\n"
    if fmt == "ascii":
        return lambda b: b.decode("utf-8", "replace").encode("utf-8") + b"\n"
    if fmt == "lines":
        return lambda b: b + b"\n"
    return lambda b: b


class _Output:
    """Where output messages go: a binary stream, or (``--json`` without a file) a list of hex."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.count = 0
        self.collected: list[str] | None = None
        self._fh: IO[bytes] | None = None
        self._own = False
        self._lock = threading.Lock()
        self._encode = _encoder(args.output)
        if args.output_file:
            try:
                self._fh = open(args.output_file, "wb")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise UsageError(f"--output-file {args.output_file}: {exc.strerror}") from None
            self._own = True
        elif args.json:
            self.collected = []
        else:
            self._fh = sys.stdout.buffer

    def write(self, data: bytes) -> None:
        with self._lock:
            self.count += 1
            if self.collected is not None:
                self.collected.append(data.hex())
            else:
                assert self._fh is not None
                self._fh.write(self._encode(data))

    def write_batch(self, _shard: int, batch: list[bytes]) -> None:
        with self._lock:
            self.count += len(batch)
            if self.collected is not None:
                self.collected.extend(b.hex() for b in batch)
            else:
                assert self._fh is not None
                enc = self._encode
                self._fh.write(b"".join(enc(b) for b in batch))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self._own:
                self._fh.close()


# ==================================================================================================
# Policy, context
# ==================================================================================================


def _side_effect_families(spec: PipelineSpecV1) -> set[str]:
    stages = spec.stages if isinstance(spec, SingleRingSpecV1) else spec.roles
    fams = {st.family for st in stages}
    return {f for f in fams if f in SIDE_EFFECT_FAMILIES}


def _context(args: argparse.Namespace, loaded: LoadedSpec, events: EventLog, *,
             lane_path: str | None, wait: str | None) -> tuple[StageContext, Any]:
    """The resolver context; through the policy gate when the spec has side-effect stages.

    With side-effect stages the policy audit record (JSON v1, ``enforced: true``, with every
    decision) is written before anything runs, also when the gate refuses (exit 4)."""
    env = posture(args)
    spec_dir = os.path.dirname(os.path.abspath(loaded.path))
    extra: dict[str, Any] = {}
    if getattr(args, "mode", None):
        extra["dataguard_mode"] = args.mode
    if not _side_effect_families(loaded.spec):
        return StageContext(posture=env, dry_run=args.dry_run, spec_hash=loaded.hash, spec_dir=spec_dir,
                            extra=extra), None
    try:
        from ..policy.audit import policy_audit_record
        from ..policy.gate import evaluate_run
    except ImportError:
        raise PolicyRefused("policy engine unavailable in this build: refusing to run a spec with "
                            "side-effect stages ungated") from None
    gate = evaluate_run(loaded.spec, spec_path=loaded.path, spec_hash=loaded.hash, posture=env,
                        dry_run=args.dry_run, approval=args.approval, key_set=args.approval_key_set,
                        policy_file=args.policy_file, recorder=events)
    record = policy_audit_record(loaded.path, mode=env, enforced=True, lane_path=lane_path, wait=wait,
                                 decisions=gate.decisions)
    args.policy_audit_written = _write_audit(args, loaded, record)
    if gate.refused:
        raise PolicyRefused(gate.refusal_message() + f"\n  (policy audit record: {args.policy_audit_written})")
    if extra:
        return dataclasses.replace(gate.context, extra={**gate.context.extra, **extra}), gate
    return gate.context, gate


def default_policy_audit_path(loaded: LoadedSpec) -> str:
    """``policy_audit-<hash8>.json`` next to the spec when that directory is writable, else
    ``/var/tmp/byteor/<name>-<hash8>/policy_audit.json``: never inside the ring/lane directory,
    which is removed when the run ends."""
    hash8 = loaded.hash.removeprefix("sha256:")[:8]
    spec_dir = os.path.dirname(os.path.abspath(loaded.path))
    if os.access(spec_dir, os.W_OK | os.X_OK):
        return os.path.join(spec_dir, f"policy_audit-{hash8}.json")
    return os.path.join(AUDIT_FALLBACK_ROOT, f"{loaded.spec.name}-{hash8}", "policy_audit.json")


def _write_audit(args: argparse.Namespace, loaded: LoadedSpec, record: dict[str, Any]) -> str:
    from ..policy.audit import write_policy_audit

    path = args.policy_audit or default_policy_audit_path(loaded)
    try:
        write_policy_audit(path, record)
    except OSError as exc:
        what = "--policy-audit" if args.policy_audit else "policy audit record"
        raise UsageError(f"{what} {path}: cannot write: {exc.strerror or exc}; a run with side-effect "
                         "stages needs its audit record (pass --policy-audit=FILE)") from None
    return path


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


def _install_signals(state: _RunState) -> Callable[[], None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        if state.stop:
            # A second signal while draining: stop at once (stages are killed, files removed; exit 130).
            raise KeyboardInterrupt
        state.stop = True
        state.signal = signal.Signals(signum).name
        if state.reading:
            raise _StopInput()

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def _runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    """``--config=FILE`` (bad file: exit 2 naming line and key); its values become the defaults of
    the options not given on the command line (command line > config file > environment > default)."""
    from ..ops.runtime_config import RuntimeConfig, read_runtime_config

    if args.config is None:
        return RuntimeConfig()
    cfg = read_runtime_config(args.config)
    for attr, value in (("env", cfg.env), ("ring_path", cfg.ring_path), ("lane_path", cfg.lane_path),
                        ("journal_dir", cfg.journal_dir), ("fsync", cfg.journal_fsync)):
        if getattr(args, attr) is None and value is not None:
            setattr(args, attr, value)
    return cfg


def _tuning_plan(args: argparse.Namespace, cfg: RuntimeConfig, processes: int) -> TuningPlan:
    """The profile every runtime process applies; ``--wait`` overrides the profile's wait."""
    from dataclasses import replace

    profile = args.tuning or cfg.tuning
    config = replace(cfg, tuning=profile, wait=args.wait or cfg.wait, effective={})
    return TuningPlan(profile, config, spinning_peers=processes)


def _tune_sp(plan: TuningPlan, record_to: str | None) -> None:
    """The ``--sp`` process is the runtime process: tune it once, before the loop."""
    _wait, report = tune_this_process(plan.to_json(record_to), "sp")
    if report is not None:
        plan.effective["sp"] = knobs_json(report)


def _run(args: argparse.Namespace) -> int:
    one_shot = _one_shot(args)  # bad --input-hex: exit 2 before anything else
    loaded = load_spec(args)
    cfg = _runtime_config(args)
    spec = loaded.spec
    events = EventLog()
    if isinstance(spec, LaneGraphSpecV1):
        return _run_lanegraph(args, loaded, one_shot, events, cfg)
    from ..runtime.support import unsupported_reasons

    reasons = unsupported_reasons(spec, sp=args.sp)
    if reasons:
        raise UnsupportedSpecError("; ".join(reasons))
    tuning = _tuning_plan(args, cfg, 1 if args.sp else len(spec.stages) * spec.shards + 1)
    wait = tuning.wait()
    ring_dir: str | None = None
    if not args.sp:
        from ..runtime.mp import default_ring_dir

        ring_dir = args.ring_path or default_ring_dir(spec, loaded.hash)
    ctx, gate = _context(args, loaded, events, lane_path=ring_dir, wait=None if args.sp else wait)
    from ..runtime.registry import close_stages, resolve_stages

    stages = resolve_stages(spec, ctx)  # every stage once, before anything runs (exit 3 on failure)
    out = _Output(args)
    state = _RunState()
    fh: IO[bytes] | None = None
    t0 = time.monotonic()
    executor: Any = None
    try:
        inputs: Any
        if one_shot is not None:
            inputs = iter(one_shot)
        else:
            fh = _open_input(args.input or "-")
            inputs = _read_stream(fh, args.input_format, state)
        if args.sp:
            from ..runtime.sp import SpExecutor

            _tune_sp(tuning, None)
            executor = SpExecutor(spec, stages)
            process = executor.process

            def sp_stats() -> tuple[int, int, float | None]:
                return executor.messages_in, executor.messages_out, None

            restore = _install_signals(state)
            try:
                progress = _Progress(sp_stats) if one_shot is None else contextlib.nullcontext()
                # stdout carries the output messages: a stage's own prints go to stderr, as in MP
                with progress, contextlib.redirect_stdout(sys.stderr), contextlib.suppress(_StopInput):
                    for msg in inputs:
                        result = process(msg)
                        if result is not None:
                            out.write(result)
                        if state.stop:
                            break
            finally:
                restore()
        else:
            from ..runtime.mp import MpExecutor

            executor = MpExecutor(spec, stages, spec_hash=loaded.hash, sink=out.write_batch, context=ctx,
                                  ring_path=ring_dir, wait=wait, tuning=tuning)

            def mp_stats() -> tuple[int, int, float | None]:
                return executor.messages_in, executor.messages_out, executor.fill()

            restore = _install_signals(state)
            try:
                executor.start()
                with _Progress(mp_stats) if one_shot is None else contextlib.nullcontext():
                    try:
                        with contextlib.suppress(_StopInput):
                            for msg in inputs:
                                executor.publish(msg)
                                if state.stop:
                                    break
                        executor.close()  # drain: every published message reaches the output
                    except BaseException:
                        executor.abort()
                        raise
            finally:
                restore()
    finally:
        if fh is not None and fh is not sys.stdin.buffer:
            fh.close()
        out.close()
        close_stages(stages)
    elapsed = time.monotonic() - t0
    summary: dict[str, Any] = {
        "spec": loaded.path, "spec_hash": loaded.hash, "target": "SingleRing",
        "executor": "sp" if args.sp else "mp", "shards": spec.shards, "ring_path": ring_dir,
        "wait": None if args.sp else wait,
        "messages_in": executor.messages_in, "messages_out": out.count, "dropped": executor.dropped,
        "elapsed_s": round(elapsed, 6), "stopped_by": state.signal,
        "restarts": {} if args.sp else executor.restarts(),
    }
    summary.update(_common_summary(args, tuning, events, gate))
    if out.collected is not None:
        summary["outputs"] = out.collected
    _finish(args, summary, one_shot is not None)
    return 0


def _common_summary(args: argparse.Namespace, tuning: TuningPlan, events: EventLog, gate: Any) -> dict[str, Any]:
    return {
        "tuning": {"profile": tuning.profile, "roles": dict(tuning.effective)},
        "side_effects": events.records,  # dry-run records (the first 10,000); performed ones are counted
        "side_effect_counts": events.summary(),
        "policy": gate.to_json() if gate is not None else None,
        "policy_audit": getattr(args, "policy_audit_written", None),
    }


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
    if summary.get("policy_audit"):
        line += f"; policy audit {summary['policy_audit']}"
    print(line, file=sys.stderr)


def _run_lanegraph(args: argparse.Namespace, loaded: LoadedSpec, one_shot: list[bytes] | None,
                   events: EventLog, cfg: RuntimeConfig) -> int:
    try:
        from ..runtime.lanegraph import run_lanegraph
        from ..runtime.lanegraph._roles import default_lane_path
        from ..runtime.lanegraph.plan import plan_lanegraph
    except ImportError:
        raise UnsupportedSpecError("LaneGraph execution is not supported by this build") from None
    spec = loaded.spec
    assert isinstance(spec, LaneGraphSpecV1)
    lane_path = args.lane_path or args.ring_path
    n_roles = len(plan_lanegraph(spec).roles)
    tuning = _tuning_plan(args, cfg, 1 if args.sp else n_roles + 1)
    wait = tuning.wait()
    audit_lane = lane_path if args.sp else (lane_path or default_lane_path(spec, loaded.hash))
    ctx, gate = _context(args, loaded, events, lane_path=audit_lane, wait=None if args.sp else wait)
    out = _Output(args)
    state = _RunState()
    fh: IO[bytes] | None = None
    t0 = time.monotonic()
    restore = _install_signals(state)
    try:
        if one_shot is not None:
            inputs: Any = iter(one_shot)
        else:
            fh = _open_input(args.input or "-")
            inputs = _read_stream(fh, args.input_format, state)

        def guarded() -> Iterator[bytes]:
            with contextlib.suppress(_StopInput):
                for msg in inputs:
                    yield msg
                    if state.stop:
                        return

        if args.sp:
            _tune_sp(tuning, None)
        result = run_lanegraph(spec, sp=args.sp, inputs=guarded(),
                               outputs=lambda _endpoint, data: out.write(data),
                               lane_path=lane_path, wait=wait, context=ctx, spec_hash=loaded.hash,
                               journal_dir=args.journal_dir, fsync=args.fsync,
                               tuning=None if args.sp else tuning)
    finally:
        restore()
        if fh is not None and fh is not sys.stdin.buffer:
            fh.close()
        out.close()
    summary: dict[str, Any] = {
        "spec": loaded.path, "spec_hash": loaded.hash, "target": "LaneGraph",
        "executor": "sp" if args.sp else "mp", "wait": None if args.sp else wait,
        "lane_path": audit_lane, "journal_dir": result.state.get("journal_dir"),
        "messages_in": result.messages_in,
        "messages_out": out.count, "dropped": sum(result.drops.values()), "drops": result.drops,
        "elapsed_s": round(time.monotonic() - t0, 6), "stopped_by": state.signal,
    }
    summary.update(_common_summary(args, tuning, events, gate))
    if out.collected is not None:
        summary["outputs"] = out.collected
    _finish(args, summary, one_shot is not None)
    return 0


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
    if args.out:
        if len(snaps) != 1:
            raise UsageError(f"--out writes one ring's snapshot; {args.ring_path} holds {len(snaps)} rings")
        from ..shm import write_ring_snapshot

        write_ring_snapshot(args.out, snaps[0])
    if args.json:
        emit_json({"rings": [s.to_json() for s in snaps], "tuning": tuning})
    else:
        console = stdout_console()
        for renderable in render_snapshots(snaps):
            console.print(renderable)
        if tuning is not None:
            console.print(_tuning_table(tuning))
    return 0


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
    try:
        from ..runtime.lanegraph import lane_snapshot, render_state
    except ImportError:
        raise UnsupportedSpecError("LaneGraph snapshots are not supported by this build") from None
    state = lane_snapshot(args.lane_path)
    if args.json:
        emit_json({**state, "tuning": tuning} if tuning is not None else state)
    else:
        console = stdout_console()
        for renderable in render_state(state):
            console.print(renderable)
        if tuning is not None:
            console.print(_tuning_table(tuning))
    return 0
