"""The run session: the one way every entry point runs a pipeline.

``byteor run``, :class:`byteor.Pipeline`, ``replay`` and ``byteor-edgeplane`` all go through a
:class:`RunSession`; none of them starts an executor itself. A session does, in this order:

1. **load** the spec (a path or a spec object), **validate** it (exit 3 with every problem) and
   compute its **hash**;
2. refuse shapes this build's executors cannot run (exit 3, before anything is created);
3. the **policy gate**: when the spec has side-effecting stages, decide each one, write the
   **policy audit record** (also when refused) and refuse (exit 4) naming each refused stage;
4. **resolve every stage once** into a :class:`~byteor.ResolvedStage` (exit 3 naming the key);
5. :meth:`RunSession.start`: start the **engine** (``--sp`` SingleRing, multi-process SingleRing,
   LaneGraph in one process, LaneGraph multi-process) with its **sinks**;
6. :meth:`RunSession.run` feeds it from **sources** until they end or ``stop`` is set, or the
   caller pushes with :meth:`RunSession.publish`;
7. :meth:`RunSession.close` **drains** (everything taken reaches the sinks), commits the sources'
   positions and returns the **summary**.

Observability: the session reports its lifecycle as events (``run.started``, ``policy.decision``,
``run.draining``, ``run.finished``; :func:`byteor.obs.emit`, text or JSON lines by ``log_format``),
and with ``metrics="HOST:PORT"`` serves ``/metrics``, ``/healthz`` and ``/readyz`` from a side
thread that reads the run's files (:mod:`byteor.obs.metrics`, :mod:`byteor.runtime.observe`).

Positions: a source's batch position is committed once every message of that batch (and of every
batch before it) has left egress and the sinks confirmed it (:meth:`~byteor.edges.Sink.flush`), or
was dropped on purpose. Sinks are flushed at least every ``flush_interval`` seconds while messages
flow, so an output file shows every message finished more than a second ago.

Failures keep what was accepted: a malformed input stops reading, everything before it is drained
to the sinks, then the :class:`~byteor.UsageError` is raised (exit 2); a failing stage stops the
pipeline, what already left egress is flushed, then :class:`~byteor.PipelineFailed` (exit 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import PolicyRefused, UnsupportedSpecError, UsageError
from .._stage import ResolvedStage, StageContext
from ..edges.base import Ingress, Sink, Source
from ..edges.files import FileSink, FileSource
from ..lanes.journal import FSYNC_POSTURES, JournalWriter
from ..obs import events
from ..obs.metrics import parse_listen
from ..obs.redact import mask_value
from ..ops.runtime_config import RuntimeConfig
from ..policy.approvals import side_effect_stages
from ..policy.audit import policy_audit_record, write_policy_audit
from ..policy.gate import RunGate, evaluate_run
from ..shm import private_ring_dir
from ..spec.kv import load_spec_file, spec_hash
from ..spec.model import LaneGraphSpecV1, PipelineSpecV1, SingleRingSpecV1
from ..spec.validate import check_v1
from ._events import EventLog
from ._tuning import TuningPlan, knobs_json, tune_this_process
from .lanegraph._roles import default_journal_dir, default_lane_path, resolve_role_stage
from .lanegraph.plan import LaneGraphPlan, plan_lanegraph
from .lanegraph.state import STATE_FILE, write_state
from .registry import MAIN_PATH_KEY, close_stages, resolve_stage
from .session_state import session_state_path, write_session_state
from .support import unsupported_reasons

if TYPE_CHECKING:
    from .mp import NativeOutput

__all__ = ["AUDIT_FALLBACK_ROOT", "RunOptions", "RunSession", "StageSite", "default_policy_audit_path"]

AUDIT_FALLBACK_ROOT = "/var/tmp/byteor"
WAITS = ("spin", "yield", "backoff", "block")
#: How long one offer may wait for room before the session serves its other duties.
_OFFER_TIMEOUT_S = 0.02
_IDLE_WAIT_S = 0.005
#: How often an idle session commits for sources whose senders wait for that commit.
_PROMPT_COMMIT_S = 0.001
#: How often the session refreshes session_state.json for observers.
_STATE_EVERY_S = 1.0


@dataclass(frozen=True)
class RunOptions:
    """How to run. Every field has the command line's default.

    ``posture``/``dry_run``/``approval``/``approval_key_set``/``policy_file`` feed the policy gate;
    ``policy_audit`` is where its record goes (default :func:`default_policy_audit_path`).
    ``replay_mode`` (``dry_run``/``execute``) runs the gate as replay does: no policy audit record,
    and refusals only in execute mode. ``ring_path`` is the SingleRing ring directory; a LaneGraph
    uses ``lane_path``, else ``ring_path``; ``tuning`` a profile name (``None``: tune nothing unless ``tune`` is set).
    ``metrics`` (``HOST:PORT``, port 0 picks one) serves Prometheus metrics and health checks while the
    run lasts (multi-process runs); ``log_format`` (``text``/``json``) how events are written. Both
    default to ``config``'s ``runtime.metrics`` / ``runtime.log_format``.
    """

    sp: bool = False
    posture: str = "dev"
    dry_run: bool = False
    approval: str | None = None
    approval_key_set: str | None = None
    policy_file: str | None = None
    policy_audit: str | None = None
    replay_mode: str | None = None
    ring_path: str | None = None
    lane_path: str | None = None
    journal_dir: str | None = None
    fsync: str | None = None
    wait: str | None = None
    tuning: str | None = None
    tune: bool = False
    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    heartbeat_timeout: float | None = None
    max_restarts: int = 5
    dead_letter_dir: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    memory_journals: bool = False
    flush_interval: float = 0.2
    metrics: str | None = None
    log_format: str | None = None


@dataclass(frozen=True)
class StageSite:
    """Where a stage runs, for a :class:`RunSession` ``wrap_stage`` hook (replay audits it), and
    the policy gate's decision for its key (None when it has no side effect)."""

    index: int
    name: str
    input_lane: str
    output_lane: str
    decision: str | None = None


def default_policy_audit_path(spec: PipelineSpecV1, digest: str, spec_path: str | None) -> str:
    """``policy_audit-<hash8>.json`` next to the spec when that directory is writable, else
    ``/var/tmp/byteor/<name>-<hash8>/policy_audit.json``: never inside the ring/lane directory,
    which is removed when the run ends."""
    hash8 = digest.removeprefix("sha256:")[:8]
    if spec_path is not None:
        spec_dir = os.path.dirname(os.path.abspath(spec_path))
        if os.access(spec_dir, os.W_OK | os.X_OK):
            return os.path.join(spec_dir, f"policy_audit-{hash8}.json")
    return os.path.join(AUDIT_FALLBACK_ROOT, f"{spec.name}-{hash8}", "policy_audit.json")


class _Outputs:
    """The sinks of one run, by egress endpoint (``"*"``: every endpoint without its own). Egress
    threads deliver concurrently; each sink is written and flushed under its own lock."""

    def __init__(self, sinks: Mapping[str, Sink], egress: Sequence[str]) -> None:
        self.sinks = dict(sinks)
        self._locks = {name: threading.Lock() for name in self.sinks}
        self.count = 0
        self._route: dict[str, tuple[Sink, threading.Lock]] = {}
        for ep in egress:
            key = ep if ep in self.sinks else "*"
            if key in self.sinks:
                self._route[ep] = (self.sinks[key], self._locks[key])
        #: the egress endpoints that have a sink
        self.routed = frozenset(self._route)
        unknown = sorted(set(self.sinks) - set(egress) - {"*"})
        if unknown:
            raise UsageError(f"no egress endpoint named {unknown[0]!r} (egress: {', '.join(egress)})")

    def deliver(self, endpoint: str, shard: int, batch: list[bytes]) -> None:
        target = self._route.get(endpoint)
        if target is None:
            return  # an egress endpoint nobody bound: its messages leave and are not kept
        sink, lock = target
        with lock:
            sink.write(batch, shard)
            self.count += len(batch)

    def flush(self) -> None:
        for name, sink in self.sinks.items():
            with self._locks[name]:
                sink.flush()


@dataclass
class _Feed:
    endpoint: int
    source: Source
    pending: list[bytes] | None = None
    offset: int = 0
    position: Any = None
    ended: bool = False
    #: an acknowledging source: at most this many messages taken and not yet committed
    window: int | None = None
    uncommitted: int = 0


class RunSession:
    """One pipeline run (see the module docstring). Construct, :meth:`start`, then :meth:`run` or
    :meth:`publish`, then :meth:`close`; or use it as a context manager (an exception aborts).

    Raises at construction: :class:`~byteor.UsageError` (exit 2: missing spec file, bad option),
    :class:`~byteor.SpecError` (exit 3: invalid spec, unresolvable stage),
    :class:`~byteor.UnsupportedSpecError` (exit 3), :class:`~byteor.PolicyRefused` (exit 4).
    """

    def __init__(self, spec: PipelineSpecV1 | str | os.PathLike[str], options: RunOptions | None = None, *,
                 wrap_stage: Callable[[StageSite, ResolvedStage], ResolvedStage] | None = None,
                 spec_label: str | None = None) -> None:
        self.options = opts = options or RunOptions()
        if opts.wait is not None and opts.wait not in WAITS:
            raise UsageError(f"--wait must be one of {'|'.join(WAITS)}, got {opts.wait!r}")
        if opts.fsync is not None and opts.fsync not in FSYNC_POSTURES:
            raise UsageError(f"journal fsync posture {opts.fsync!r} is not one of {', '.join(FSYNC_POSTURES)}")
        log_format = opts.log_format or opts.config.log_format
        if log_format is not None and log_format not in events.LOG_FORMATS:
            raise UsageError(f"--log-format must be one of {'|'.join(events.LOG_FORMATS)}, got {log_format!r}")
        self.metrics_listen = self._metrics_listen()
        if isinstance(spec, str | os.PathLike):
            self.spec_path: str | None = os.fspath(spec)
            self.spec: PipelineSpecV1 = load_spec_file(self.spec_path)
        else:
            self.spec_path = None
            self.spec = spec
        self.spec_label = spec_label or self.spec_path or "<python>"
        events.configure(log_format, pipeline=self.spec.name)
        check_v1(self.spec, path=self.spec_path)
        self.spec_hash = spec_hash(self.spec)
        reasons = unsupported_reasons(self.spec, sp=opts.sp)
        if reasons:
            prefix = "LaneGraph shape not supported: " if isinstance(self.spec, LaneGraphSpecV1) else ""
            raise UnsupportedSpecError(prefix + "; ".join(reasons))
        self.is_lanegraph = isinstance(self.spec, LaneGraphSpecV1)
        self.plan: LaneGraphPlan | None = plan_lanegraph(self.spec) if isinstance(self.spec, LaneGraphSpecV1) \
            else None
        self.events = EventLog()
        self.tuning = self._tuning_plan()
        self.wait = None if opts.sp else self.tuning.wait()
        self.ring_path = self._ring_path()
        self.journal_dir: str | None = None
        #: SingleRing: where the run records every message it takes (``--journal-dir``), for bundles
        #: and replay; a journal lane named after the ingress boundary
        self.ingress_journal: str | None = None
        if isinstance(self.spec, SingleRingSpecV1) and opts.journal_dir:
            self.ingress_journal = os.path.join(opts.journal_dir, self.spec.ingress)
        self._journal: JournalWriter | None = None
        if isinstance(self.spec, LaneGraphSpecV1):
            self.journal_dir = opts.journal_dir or default_journal_dir(self.spec, self.spec_hash)
        self.gate: RunGate | None = None
        self.policy_audit_path: str | None = None
        self.context = self._gate()
        self._stages: list[ResolvedStage] = []
        self._roles: dict[str, ResolvedStage] = {}
        self._resolve(wrap_stage)
        self.engine: Any = None
        self._outputs: _Outputs | None = None
        self._queue: deque[tuple[_Feed, Any, tuple[int, ...], int]] = deque()
        self._t0 = 0.0
        self._elapsed: float | None = None
        self.stopped_by: str | None = None
        self._closed = False
        self._state: dict[str, Any] | None = None
        self._final: dict[str, Any] | None = None
        self._feeds: list[_Feed] = []
        self._started_ms = 0
        self._state_at = 0.0
        self._fixed: dict[str, Any] | None = None
        #: whether egress writes the output file itself (native egress), not through the sink
        self._native_out = False
        self._metrics: Any = None
        self._draining = False
        #: where ``/metrics`` listens once started (``HOST:PORT``, the port resolved)
        self.metrics_address: str | None = None

    # -- construction steps ---------------------------------------------------------------------------

    @property
    def spec_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.spec_path)) if self.spec_path else os.getcwd()

    @property
    def ingress(self) -> tuple[str, ...]:
        if self.plan is not None:
            return tuple(ep for ep, _lane in self.plan.ingress)
        assert isinstance(self.spec, SingleRingSpecV1)
        return (self.spec.ingress,)

    @property
    def egress(self) -> tuple[str, ...]:
        if self.plan is not None:
            return tuple(ref.who.split(":", 1)[1] for ref in self.plan.egress)
        assert isinstance(self.spec, SingleRingSpecV1)
        return (self.spec.egress,)

    def ingress_limits(self, endpoint: int) -> Ingress:
        """Slot size and capacity of the ring or lane an ingress endpoint feeds (a journal lane,
        which has no capacity, counts as the engine's preferred batch)."""
        if self.plan is None:
            assert isinstance(self.spec, SingleRingSpecV1)
            return Ingress(self.spec.ingress, self.spec.slot_bytes, self.spec.capacity)
        assert isinstance(self.spec, LaneGraphSpecV1)
        name, lane_name = self.plan.ingress[endpoint]
        lane = next(ln for ln in self.spec.lanes if ln.name == lane_name)
        return Ingress(name, lane.slot_bytes, lane.capacity or 4096)

    def _metrics_listen(self) -> tuple[str, int] | None:
        opts = self.options
        text = opts.metrics or opts.config.metrics
        if text is None:
            return None
        try:
            listen = parse_listen(text)
        except ValueError as exc:
            raise UsageError(f"--metrics: {exc}") from None
        if opts.sp:
            raise UsageError("--metrics reads the shared-memory files of a multi-process run; "
                             "--sp runs in one process (drop one of them)")
        return listen

    def _tuning_plan(self) -> TuningPlan:
        """The profile every runtime process applies; ``wait`` overrides the profile's wait."""
        opts = self.options
        if isinstance(self.spec, SingleRingSpecV1):
            from .mp import tuning_role

            shards = self.spec.shards
            roles = tuple(tuning_role(st.id, k, shards) for k in range(shards) for st in self.spec.stages)
        else:
            assert self.plan is not None
            roles = tuple(rp.name for rp in self.plan.roles)
        profile = opts.tuning or opts.config.tuning
        config = dataclasses.replace(opts.config, tuning=profile, wait=opts.wait or opts.config.wait, effective={})
        return TuningPlan(profile, config, spinning_peers=1 if opts.sp else len(roles) + 1,
                          roles=() if opts.sp else roles)

    def _ring_path(self) -> str | None:
        """Where the shared-memory files go (None for ``--sp``, except a LaneGraph state file)."""
        path = (self.options.lane_path or self.options.ring_path) if self.is_lanegraph else self.options.ring_path
        if self.options.sp:
            return path if self.is_lanegraph else None
        if path:
            return path
        if isinstance(self.spec, LaneGraphSpecV1):
            return default_lane_path(self.spec, self.spec_hash)
        from .mp import default_ring_dir

        assert isinstance(self.spec, SingleRingSpecV1)
        return default_ring_dir(self.spec, self.spec_hash)

    def _gate(self) -> StageContext:
        """The resolver context; through the policy gate when the spec has side-effect stages.

        With side-effect stages the policy audit record (JSON v1, ``enforced: true``, with every
        decision) is written before anything runs, also when the gate refuses (exit 4)."""
        opts = self.options
        extra = dict(opts.extra)
        if any(k.startswith("py:__main__:") for k in self._stage_keys()):
            main = sys.modules.get("__main__")
            if main is not None and getattr(main, "__file__", None):
                extra[MAIN_PATH_KEY] = os.path.abspath(str(main.__file__))
        if not side_effect_stages(self.spec):
            return StageContext(posture=opts.posture, dry_run=opts.dry_run, spec_hash=self.spec_hash,
                                spec_dir=self.spec_dir, recorder=self.events, extra=extra,
                                dead_letter_dir=opts.dead_letter_dir)
        gate = evaluate_run(self.spec, spec_path=self.spec_path or os.path.join(self.spec_dir, "spec.kv"),
                            spec_hash=self.spec_hash, posture=opts.posture, dry_run=opts.dry_run,
                            approval=opts.approval, key_set=opts.approval_key_set,
                            replay_mode=opts.replay_mode, policy_file=opts.policy_file, recorder=self.events,
                            dead_letter_dir=opts.dead_letter_dir)
        self.gate = gate
        for d in gate.decisions:
            events.emit("policy.decision", f"stage {d.index} {d.name!r}: {d.decision} ({d.reason})", text=False,
                        stage=d.name, family=d.family, decision=d.decision, reason=d.reason,
                        posture=gate.posture)
        if opts.replay_mode is None:
            self.policy_audit_path = self._write_audit(gate)
        refuse = opts.replay_mode in (None, "execute")
        if refuse and gate.refused:
            where = f"\n  (policy audit record: {self.policy_audit_path})" if self.policy_audit_path else ""
            raise PolicyRefused(gate.refusal_message() + where)
        context = gate.context
        if opts.replay_mode == "dry_run":
            context = dataclasses.replace(context, dry_run=True)
        return dataclasses.replace(context, spec_dir=self.spec_dir, extra={**context.extra, **extra})

    def _stage_keys(self) -> list[str]:
        items = self.spec.stages if isinstance(self.spec, SingleRingSpecV1) else self.spec.roles
        return [st.resolver_key for st in items if st.resolver_key]

    def _write_audit(self, gate: RunGate) -> str:
        opts = self.options
        wait = None if opts.sp else self.wait
        lane = self.ring_path
        if self.spec_path is not None:
            record = policy_audit_record(self.spec_path, mode=opts.posture, enforced=True, lane_path=lane,
                                         wait=wait, decisions=gate.decisions)
        else:
            record = policy_audit_record(self.spec_label, mode=opts.posture, enforced=True, lane_path=lane,
                                         wait=wait, decisions=gate.decisions, spec=self.spec)
        path = opts.policy_audit or default_policy_audit_path(self.spec, self.spec_hash, self.spec_path)
        try:
            write_policy_audit(path, record)
        except OSError as exc:
            what = "--policy-audit" if opts.policy_audit else "policy audit record"
            raise UsageError(f"{what} {path}: cannot write: {exc.strerror or exc}; a run with side-effect "
                             "stages needs its audit record (pass --policy-audit=FILE)") from None
        return path

    def _resolve(self, wrap: Callable[[StageSite, ResolvedStage], ResolvedStage] | None) -> None:
        """Every stage once, before anything runs (exit 3 naming the key on failure)."""
        spec = self.spec
        try:
            if isinstance(spec, SingleRingSpecV1):
                for i, st in enumerate(spec.stages):
                    rs = resolve_stage(st, i, self.context)
                    self._stages.append(rs)
                    if wrap is not None:
                        site = StageSite(i, st.id, spec.ingress, spec.egress, self._decision(rs))
                        self._stages[-1] = wrap(site, rs)
            else:
                for i, role in enumerate(spec.roles):
                    if role.kind != "stage":
                        continue
                    rs = resolve_role_stage(i, role, self.context)
                    self._roles[role.name] = rs
                    if wrap is not None:
                        site = StageSite(i, role.name, role.inputs[0], role.outputs[0], self._decision(rs))
                        self._roles[role.name] = wrap(site, rs)
        except BaseException:
            self._close_stages()
            raise

    def _decision(self, stage: ResolvedStage) -> str | None:
        return self.context.decisions.get(stage.key) if stage.side_effect else None

    def _close_stages(self) -> None:
        close_stages([*self._stages, *self._roles.values()])

    # -- start ----------------------------------------------------------------------------------------

    def start(self, sinks: Sink | Mapping[str, Sink]) -> None:
        """Open the sinks and start the engine. ``sinks``: one sink for every egress endpoint, or a
        mapping from egress endpoint name (``"*"``: the rest) to sink."""
        opts = self.options
        mapping = {"*": sinks} if isinstance(sinks, Sink) else dict(sinks)
        outputs = _Outputs(mapping, self.egress)
        opened: list[Sink] = []
        try:
            for sink in mapping.values():
                sink.open()
                opened.append(sink)
            if opts.sp and (opts.tune or self.tuning.profile is not None):
                _wait, report = tune_this_process(self.tuning.to_json(None), "sp")
                if report is not None:
                    self.tuning.effective["sp"] = knobs_json(report)
            self.engine = self._engine(outputs)
            self._native_out = bool(getattr(self.engine, "native_output", False))
            self._outputs = outputs
            self._t0 = time.monotonic()
            self._started_ms = int(time.time() * 1000)
            if self.ingress_journal is not None:
                fsync = opts.fsync or os.environ.get("BYTEOR_JOURNAL_FSYNC") or "none"
                assert isinstance(self.spec, SingleRingSpecV1)
                self._journal = JournalWriter(self.ingress_journal, slot_bytes=self.spec.slot_bytes, fsync=fsync,
                                              spec_hash=self.spec_hash)
            self.engine.start()
            self._start_metrics()
            self._publish_state()
            events.emit("run.started", f"{self.spec.name} started ({self.spec.target}, "
                        f"{'sp' if opts.sp else 'mp'})", text=False, spec_hash=self.spec_hash,
                        target=self.spec.target, executor="sp" if opts.sp else "mp", posture=opts.posture,
                        path=self.ring_path, metrics=self.metrics_address)
        except BaseException:
            for sink in opened:
                sink.close()
            self._outputs = None
            self.abort()
            raise

    def _start_metrics(self) -> None:
        if self.metrics_listen is None or self.ring_path is None:
            return
        from ..obs.metrics import MetricsServer
        from .observe import Observer

        observer = Observer(self.ring_path)
        lock = threading.Lock()  # scrapes and /readyz may come on several server threads

        def observe() -> dict[str, Any]:
            with lock:
                return observer.observe()

        server = MetricsServer(*self.metrics_listen, observe)
        try:
            host, port = server.start()
        except OSError as exc:
            observer.close()
            raise UsageError(f"--metrics {self.metrics_listen[0]}:{self.metrics_listen[1]}: cannot listen: "
                             f"{exc.strerror or exc}") from None
        self._metrics = (server, observer)
        self.metrics_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        events.emit("metrics.listening", f"metrics on http://{self.metrics_address}/metrics", text=False,
                    address=self.metrics_address)

    def _stop_metrics(self) -> None:
        held, self._metrics = self._metrics, None
        if held is not None:
            server, observer = held
            server.stop()
            observer.close()

    def _engine(self, outputs: _Outputs) -> Any:
        opts = self.options
        spec = self.spec
        if isinstance(spec, SingleRingSpecV1):
            egress = spec.egress

            def sink(shard: int, batch: list[bytes]) -> None:
                outputs.deliver(egress, shard, batch)

            if opts.sp:
                from .sp import SpExecutor

                return SpExecutor(spec, self._stages, sink)
            from .mp import MpExecutor

            return MpExecutor(spec, self._stages, spec_hash=self.spec_hash, sink=sink, context=self.context,
                              ring_path=self.ring_path, wait=self.wait or "backoff",
                              heartbeat_timeout=opts.heartbeat_timeout or 30.0, max_restarts=opts.max_restarts,
                              tuning=self.tuning, output=self._native_output(outputs))
        assert self.plan is not None and self.journal_dir is not None
        fsync = opts.fsync or os.environ.get("BYTEOR_JOURNAL_FSYNC") or "none"
        if fsync not in FSYNC_POSTURES:
            raise UsageError(f"journal fsync posture {fsync!r} is not one of {', '.join(FSYNC_POSTURES)}")
        if opts.sp:
            from .lanegraph.sp import SpGraph

            return SpGraph(spec, self.plan, self._roles, deliver=outputs.deliver, journal_dir=self.journal_dir,
                           fsync=fsync, spec_hash=self.spec_hash, lane_path=self.ring_path,
                           memory_journals=opts.memory_journals)
        from .lanegraph.mp import HEARTBEAT_TIMEOUT_S, MpGraph

        assert self.ring_path is not None
        return MpGraph(spec, self.plan, deliver=outputs.deliver, context=self.context,
                       journal_dir=self.journal_dir, fsync=fsync, spec_hash=self.spec_hash,
                       lane_path=self.ring_path, wait=self.wait or "backoff", tuning=self.tuning,
                       heartbeat_timeout=opts.heartbeat_timeout or HEARTBEAT_TIMEOUT_S,
                       output=self._native_output(outputs))

    def _native_output(self, outputs: _Outputs) -> NativeOutput | None:
        """Where a multi-process engine's egress may write itself (``NativeOutput``), or None.

        Native egress (encoding and writing in C, no Python per message) is used when the run's only
        sink is a :class:`~byteor.edges.FileSink` (a file or stdout) with a real descriptor, bound to
        the graph's only egress endpoint; for a LaneGraph, when that endpoint reads a ring lane (not
        a journal); for a sharded SingleRing, when the output is a regular file (several egress
        threads' writes to a pipe could interleave inside a message)."""
        from .mp import NativeOutput

        sinks = list(outputs.sinks.values())
        if len(sinks) != 1 or type(sinks[0]) is not FileSink or len(self.egress) != 1 \
                or self.egress[0] not in outputs.routed:
            return None
        if self.plan is not None and self.plan.lane(self.plan.egress[0].lane).kind == "journal":
            return None
        sink = sinks[0]
        fd = sink.fileno()
        if fd is None:
            return None
        if isinstance(self.spec, SingleRingSpecV1) and self.spec.shards > 1 and not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return NativeOutput(fd, sink.framing, sink.label, self.options.flush_interval)

    def _native_input(self, feeds: list[_Feed]) -> _Feed | None:
        """The feed the engine may read itself (native ingest: parsing and publishing in C), or None.

        That is a multi-process run fed by one :class:`~byteor.edges.FileSource` (a file or stdin,
        ``lines``/``hex``/``len32``) whose engine can take it (a SingleRing; a LaneGraph with one
        ingress endpoint on a ring lane with ``on_full=block``), with no ingress journal:
        ``--journal-dir`` records every message in Python, so a journaled run keeps the Python pump."""
        if len(feeds) != 1 or type(feeds[0].source) is not FileSource or self._journal is not None:
            return None
        return feeds[0] if getattr(self.engine, "ingest_supported", False) else None

    # -- feeding ----------------------------------------------------------------------------------------

    def _endpoint(self, endpoint: str | int | None) -> int:
        names = self.ingress
        if endpoint is None:
            if len(names) != 1:
                raise UsageError(f"this graph has {len(names)} ingress endpoints ({', '.join(names)}); "
                                 "name the one to publish to")
            return 0
        if isinstance(endpoint, int):
            if not 0 <= endpoint < len(names):
                raise UsageError(f"ingress endpoint index {endpoint} out of range (0..{len(names) - 1})")
            return endpoint
        if endpoint not in names:
            raise UsageError(f"no ingress endpoint named {endpoint!r} (ingress: {', '.join(names)})")
        return names.index(endpoint)

    def _taken(self, items: Sequence[bytes | bytearray | memoryview], n: int) -> None:
        """The engine took ``items[:n]``: record them in the ingress journal when there is one."""
        journal = self._journal
        if journal is not None and n:
            append = journal.append
            for i in range(n):
                append(items[i])

    def publish(self, items: Sequence[bytes | bytearray | memoryview], endpoint: str | int | None = None) -> None:
        """Push messages in (blocks while the pipeline is full). Raises
        :class:`~byteor.PipelineFailed` once a stage failed, :class:`~byteor.UsageError` for a
        message larger than the slot."""
        e = self._endpoint(endpoint)
        engine = self.engine
        done = 0
        n = len(items)
        while done < n:
            chunk = items[done:] if done else items
            k = engine.offer(e, chunk, _OFFER_TIMEOUT_S * 5)
            self._taken(chunk, k)
            done += k
            if done < n:
                engine.tick()
        if time.monotonic() - self._state_at >= _STATE_EVERY_S:
            self._publish_state()

    def run(self, sources: Source | Mapping[str, Source], *, stop: threading.Event | None = None) -> None:
        """Feed the engine from ``sources`` (one source, or ingress endpoint name -> source) until
        every source ended or ``stop`` is set; then drain. Raises a source's
        :class:`~byteor.UsageError` after draining what came before it."""
        if isinstance(sources, Source):
            if len(self.ingress) != 1:
                raise UsageError(f"this graph has {len(self.ingress)} ingress endpoints "
                                 f"({', '.join(self.ingress)}) and one input; bind each endpoint to its own "
                                 "source (byteor-edgeplane run --endpoint=NAME=URI)")
            feeds = [_Feed(0, sources)]
        else:
            feeds = [_Feed(self._endpoint(name), src) for name, src in sources.items()]
        opened: list[Source] = []
        input_error: BaseException | None = None
        native = self._native_input(feeds)
        fd = -1
        try:
            for feed in feeds:
                limits = self.ingress_limits(feed.endpoint)
                feed.source.bind(limits)
                if feed.source.acks:
                    feed.window = max(2, limits.capacity)
                if feed is native:
                    assert isinstance(feed.source, FileSource)
                    fd = feed.source.open_descriptor()
                else:
                    feed.source.open()
                opened.append(feed.source)
            self._feeds = feeds
            self._publish_state()
            input_error = self._pump(feeds, stop) if native is None else self._pump_native(native, fd, stop)
            self.drain()
        finally:
            for src in opened:
                src.close()
        if input_error is not None:
            raise input_error

    def _pump(self, feeds: list[_Feed], stop: threading.Event | None) -> BaseException | None:
        engine = self.engine
        outputs = self._outputs
        assert outputs is not None
        batch_max = int(engine.preferred_batch)
        interval = self.options.flush_interval
        last_flush = time.monotonic()
        while True:
            if stop is not None and stop.is_set():
                return None
            moved = False
            active = False
            held = False
            for feed in feeds:
                if feed.ended:
                    continue
                active = True
                if feed.pending is None:
                    want = batch_max
                    if feed.window is not None:
                        # an acknowledging source: what is taken and not committed stays within the
                        # ingress capacity, so a crash repeats at most that many messages
                        want = min(batch_max, feed.window // 2)
                        if feed.uncommitted + want > feed.window:
                            self._flush_and_commit()
                            last_flush = time.monotonic()
                            if feed.uncommitted + want > feed.window:
                                held = True
                                continue
                    try:
                        batch = feed.source.next_batch(want)
                    except UsageError as exc:
                        feed.ended = True
                        return exc
                    if batch is None:
                        feed.ended = True
                        continue
                    if not batch.messages:
                        continue
                    feed.pending = list(batch.messages)
                    feed.offset = 0
                    feed.position = batch.position
                    feed.uncommitted += len(feed.pending)
                pending = feed.pending
                rest = pending[feed.offset:] if feed.offset else pending
                try:
                    n = engine.offer(feed.endpoint, rest, _OFFER_TIMEOUT_S)
                except UsageError as exc:  # an oversized message: keep what came before it
                    feed.ended = True
                    return exc
                if n:
                    moved = True
                    feed.offset += n
                    self._taken(rest, n)
                if feed.offset >= len(pending):
                    self._queue.append((feed, feed.position, engine.mark(), len(pending)))
                    feed.pending = None
            engine.tick()
            now = time.monotonic()
            if now - last_flush >= interval:
                last_flush = now
                self._flush_and_commit()
            if now - self._state_at >= _STATE_EVERY_S:
                self._publish_state()
            if not active:
                return None
            if not moved:
                # the input may be quiet because its senders wait for a commit: commit as soon as
                # the pipeline let the messages out, not at the next flush interval
                prompt = any(f.source.waits_for_commit and f.uncommitted for f in feeds)
                if prompt and now - last_flush >= _PROMPT_COMMIT_S:
                    last_flush = now
                    self._flush_and_commit()
                waiting = [f for f in feeds if not f.ended and f.pending is None]
                if waiting and not held:
                    waiting[0].source.wait(_PROMPT_COMMIT_S if prompt else _IDLE_WAIT_S)
                else:
                    time.sleep(0.0005)

    def _pump_native(self, feed: _Feed, fd: int, stop: threading.Event | None) -> BaseException | None:
        """Feed the engine from ``fd`` through its native ingest, run in a thread (GIL released);
        this thread meanwhile serves the session's duties (stop, failures, flushes, state)."""
        source = feed.source
        assert isinstance(source, FileSource)
        engine = self.engine
        ingest = engine.ingest(fd, source.framing, label=source.label, error=UsageError)
        failure: list[BaseException] = []

        def read() -> None:
            try:
                ingest.run()
            except UsageError as exc:  # malformed input, after every message before it
                failure.append(exc)
            except OSError as exc:  # the text names the option and the reason
                failure.append(UsageError(f"{exc.strerror or exc} ({source.name})"))
            except BaseException as exc:
                failure.append(exc)

        interval = self.options.flush_interval
        last_flush = time.monotonic()
        reader = threading.Thread(target=read, name="byteor-input", daemon=True)
        reader.start()
        try:
            while reader.is_alive():
                reader.join(0.05)
                if stop is not None and stop.is_set():
                    ingest.stop()
                engine.tick()
                now = time.monotonic()
                if now - last_flush >= interval:
                    last_flush = now
                    self._flush_and_commit()
                if now - self._state_at >= _STATE_EVERY_S:
                    self._publish_state()
        finally:
            ingest.stop()
            reader.join()
            engine.ingested()
            source.messages = int(ingest.messages)
        if failure:
            if isinstance(failure[0], UsageError):
                return failure[0]
            raise failure[0]
        return None

    @property
    def _state_dir(self) -> str | None:
        """Where session_state.json goes: the ring or lane directory, while the engine has one."""
        if self.engine is None or self.ring_path is None or not os.path.isdir(self.ring_path):
            return None
        return self.ring_path

    def _publish_state(self) -> None:
        self._state_at = time.monotonic()
        directory = self._state_dir
        if directory is None:
            return
        counts = self._counts()
        sinks = self._outputs.sinks if self._outputs is not None else {}
        state = {
            "name": self.spec.name, "spec_hash": self.spec_hash, "target": self.spec.target,
            "executor": "sp" if self.options.sp else "mp", "posture": self.options.posture, "pid": os.getpid(),
            "started_unix_ms": self._started_ms, "updated_unix_ms": int(time.time() * 1000),
            "ring_path": self.ring_path, "journal_dir": self.journal_dir,
            "messages_in": counts["messages_in"], "messages_out": counts["messages_out"],
            "dropped": counts["dropped"], "metrics": self.metrics_address,
            # masked here too: a describe() that names a URI with credentials never reaches the file
            "sources": mask_value([{"endpoint": self.ingress[f.endpoint], **f.source.describe()} for f in self._feeds]),
            "sinks": mask_value([{"endpoint": name, **sink.describe()} for name, sink in sinks.items()]),
            **self._fixed_state(),
        }
        with contextlib.suppress(OSError):  # observers are best effort; the run goes on
            write_session_state(directory, state)

    def _fixed_state(self) -> dict[str, Any]:
        """What does not change while the run lasts: the spec it runs, its policy and evidence paths
        (the console draws the topology and writes bundles from these)."""
        if self._fixed is None:
            from ..spec.kv import canonical_bytes

            gate = self.gate
            approval = None
            if gate is not None and gate.approval is not None:
                # what the approval says, never the credential itself
                approval = {**gate.approval.summary(), "issued_at": gate.approval.payload.issued_at}
            self._fixed = {
                "spec_path": os.path.abspath(self.spec_path) if self.spec_path else None,
                "spec_kv": canonical_bytes(self.spec).decode("utf-8"),
                "policy": [] if gate is None else [
                    {"stage": d.name, "index": d.index, "key": d.key, "family": d.family, "decision": d.decision,
                     "reason": d.reason} for d in gate.decisions],
                "dry_run": self.options.dry_run,
                "approval": approval,
                "approval_error": None if gate is None or gate.approval_error is None else str(gate.approval_error),
                "policy_audit": self.policy_audit_path,
                "dead_letter_dir": None if gate is None else gate.context.dead_letter_dir,
                "ingress_journal": self.ingress_journal,
            }
        return self._fixed

    def _remove_state(self) -> None:
        directory = self._state_dir
        if directory is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(session_state_path(directory))

    def _flush_and_commit(self, everything: bool = False) -> None:
        """Flush the sinks; commit every queued batch that is out of the pipeline."""
        assert self._outputs is not None
        done = None if everything else self.engine.progress()
        self._outputs.flush()
        queue = self._queue
        while queue:
            feed, position, mark, count = queue[0]
            if done is not None and any(d < m for d, m in zip(done, mark, strict=True)):
                break
            queue.popleft()
            feed.source.commit(position)
            feed.uncommitted -= count

    # -- stop -----------------------------------------------------------------------------------------

    def drain(self) -> None:
        """No more input: everything taken reaches the sinks; positions are committed."""
        if self.engine is None or self._closed:
            return
        if not self._draining:
            self._draining = True
            events.emit("run.draining", f"{self.spec.name}: no more input; draining", text=False,
                        messages_in=self._counts()["messages_in"])
        try:
            self.engine.drain()
            self._elapsed = time.monotonic() - self._t0
            self._state = self._final_state()
            if self.options.sp and self._state is not None and self.ring_path is not None:
                # a one-process graph has no live state file; leave the final one where asked
                private_ring_dir(self.ring_path)
                write_state(os.path.join(self.ring_path, STATE_FILE), self._state)
            self._flush_and_commit(everything=True)
        except BaseException:
            self._flush_quietly()
            raise

    def _final_state(self) -> dict[str, Any] | None:
        state = getattr(self.engine, "state", None)
        return state() if callable(state) else None

    def _flush_quietly(self) -> None:
        if self._outputs is not None:
            with contextlib.suppress(Exception):  # the run's own failure is what the caller must see
                self._outputs.flush()

    def close(self) -> dict[str, Any]:
        """Drain, stop, release everything; returns the :meth:`summary`."""
        if not self._closed:
            try:
                self.drain()
            except BaseException:
                self.abort()
                raise
            self._release()
            summary = self.summary()
            events.emit("run.finished", f"{self.spec.name} finished: {summary['messages_in']:,} in, "
                        f"{summary['messages_out']:,} out, {summary['dropped']:,} dropped", text=False,
                        messages_in=summary["messages_in"], messages_out=summary["messages_out"],
                        dropped=summary["dropped"], elapsed_s=summary["elapsed_s"],
                        restarts=summary["restarts"], stopped_by=summary["stopped_by"])
            return summary
        return self.summary()

    def abort(self) -> None:
        """Stop at once (no drain): processes killed, shared-memory files removed, sinks closed."""
        if self._closed:
            return
        if self._elapsed is None and self._t0:
            self._elapsed = time.monotonic() - self._t0
        if self._outputs is not None:
            for sink in self._outputs.sinks.values():
                with contextlib.suppress(Exception):
                    sink.abandon()
        self._flush_quietly()
        self._release()

    def _release(self) -> None:
        self._closed = True
        engine = self.engine
        self._stop_metrics()  # before the files it reads go away
        try:
            if engine is not None:
                with contextlib.suppress(Exception):  # a half-started engine has nothing to show
                    if self._state is None:
                        self._state = self._final_state()
                    self._final = self._engine_counts(engine)
                self._remove_state()
                self.engine = None
                engine.close()
        finally:
            self._close_stages()
            journal, self._journal = self._journal, None
            if journal is not None:
                journal.close()
            if self._outputs is not None:
                for sink in self._outputs.sinks.values():
                    sink.close()

    def __enter__(self) -> RunSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()

    # -- observe ----------------------------------------------------------------------------------------

    @staticmethod
    def _engine_counts(engine: Any) -> dict[str, Any]:
        drops = engine.drops() if hasattr(engine, "drops") else None
        return {"messages_in": int(engine.messages_in), "messages_out": int(engine.messages_out),
                "fill": engine.fill(), "dropped": int(engine.dropped), "drops": drops,
                "restarts": engine.restarts()}

    def _counts(self) -> dict[str, Any]:
        if self.engine is not None:
            return self._engine_counts(self.engine)
        return self._final or {"messages_in": 0, "messages_out": 0, "fill": None, "dropped": 0, "drops": None,
                               "restarts": {}}

    def stats(self) -> tuple[int, int, float | None]:
        """Messages in, messages out, the fullest ring's fill (None when there is no ring)."""
        c = self._counts()
        return c["messages_in"], c["messages_out"], c["fill"]

    def summary(self) -> dict[str, Any]:
        """What ran: the spec, the executor, counts, restarts, tuning, side effects, policy."""
        counts = self._counts()
        opts = self.options
        out: dict[str, Any] = {
            "spec": self.spec_label, "spec_hash": self.spec_hash, "target": self.spec.target,
            "executor": "sp" if opts.sp else "mp",
        }
        if isinstance(self.spec, SingleRingSpecV1):
            out.update({"shards": self.spec.shards, "ring_path": self.ring_path, "wait": self.wait,
                        "journal": self.ingress_journal})
        else:
            out.update({"wait": self.wait, "lane_path": self.ring_path, "journal_dir": self.journal_dir})
        out["messages_in"] = counts["messages_in"]
        if self._native_out:  # egress wrote the file itself: its own count
            out["messages_out"] = counts["messages_out"]
        else:
            out["messages_out"] = self._outputs.count if self._outputs is not None else 0
        out["dropped"] = counts["dropped"]
        if self.is_lanegraph:
            out["drops"] = counts["drops"] or {}
        out["elapsed_s"] = round(self._elapsed or 0.0, 6)
        out["stopped_by"] = self.stopped_by
        out["restarts"] = counts["restarts"]
        out["tuning"] = {"profile": self.tuning.profile, "roles": dict(self.tuning.effective)}
        out["side_effects"] = self.events.records
        out["side_effect_counts"] = self.events.summary()
        out["policy"] = self.gate.to_json() if self.gate is not None else None
        out["policy_audit"] = self.policy_audit_path
        if any(f.source.acks for f in self._feeds):
            # broker sources: what each committed, and what the broker handed over again
            out["sources"] = mask_value([{"endpoint": self.ingress[f.endpoint], **f.source.describe()}
                                         for f in self._feeds])
            out["redelivered"] = sum(int(f.source.redelivered) for f in self._feeds)
        return out

    @property
    def state(self) -> dict[str, Any] | None:
        """The final ``lane_graph_state`` of a LaneGraph run (after :meth:`close`)."""
        return self._state

