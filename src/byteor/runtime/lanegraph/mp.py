"""The multi-process LaneGraph engine: one process per role under the runtime's supervisor.

Layout under the lane path (default ``/dev/shm/byteor/<name>-<hash8>/``): ``spec.kv`` (the canonical
spec every role re-plans from), one ring file per ``events``/``mpsc``/``fanout`` lane
(``<lane>.<kind>.ring``, see :mod:`byteor.lanes.shm`), ``roles/<role>.stats`` counters,
``lane_graph_state.json`` (refreshed about every 200 ms; ``snapshot --lane-path`` reads it),
``counters.bin`` (:mod:`byteor.obs.counters`: a ``session`` row with messages in, out and dropped, and
one row per role with its state, pid, restarts, actions and DataGuard counts). Journal lanes live on
disk under the journal directory. Everything in the lane path is removed at the end.

The run session's thread is the ingress: :meth:`MpGraph.offer` publishes into an ingress lane under
its ``on_full`` policy, waiting at most the given timeout for room. One egress thread per egress
endpoint hands each batch to ``deliver(endpoint, 0, batch)`` before it releases the lane cells.
Shutdown drains: :meth:`MpGraph.drain` stops the ingress lanes; a lane is stopped once all its
writers have exited; a role exits once all its inputs are stopped and drained; the run ends when
every role exited and every egress is drained.

What has left egress (:meth:`MpGraph.progress`) is found without per-message bookkeeping, by
epochs: an epoch records how many messages each ingress endpoint had taken and every lane's write
position, waits until every reader of every lane has read past those positions, then records the
write positions again and waits again, once more than the longest chain of roles. A message taken
before the epoch began is then out of the graph: delivered, written to a journal lane nobody reads,
or dropped on purpose, because every role publishes a message's outputs before it releases the
message on its input.

Roles that die are restarted by :class:`byteor.runtime.supervisor.Supervisor` (at most 5 deaths a
minute, then the run fails naming the role); a role that fails on its own terms (``on_full=fail``, a
stage exception) stops the run with :class:`~byteor.PipelineFailed` naming the lane or role.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ... import _native
from ..._errors import PipelineFailed, ShmError
from ..._fileio import ensure_private_dir, write_bytes_atomic
from ..._stage import StageContext
from ...lanes.journal import JournalReader, JournalSubscription, JournalWriter
from ...lanes.shm import create_lane, lane_file
from ...obs import counters
from ...shm import private_ring_dir
from ...spec.kv import canonical_bytes
from ...spec.model import LaneGraphSpecV1
from .._child import context_to_json
from .._events import EventLog
from .._tuning import RUNTIME_CONFIG_FILE, TuningPlan, read_tuning, remove_runtime_config
from ..mp import NativeOutput
from ..supervisor import StageProcess, Supervisor, wait_quiet
from ._role_main import lane_spec, stop_marker
from ._roles import journal_lane_dir, oversize
from ._stats import RoleStats
from .plan import LaneGraphPlan
from .state import STATE_FILE, lane_state_entry, new_state, role_state_entry, write_state

__all__ = ["HEARTBEAT_TIMEOUT_S", "MpGraph"]

_STATE_EVERY_S = 0.2
_IN, _OUT, _DROPPED = (counters.WORDS[w] for w in ("messages_in", "messages_out", "dropped"))
_POLL_NS = 100_000_000
#: The most messages one egress call takes (and hands to the sink) at once.
_EGRESS_BATCH = 8192
#: A role with input waiting and no heartbeat for this long is hung: killed and restarted.
HEARTBEAT_TIMEOUT_S = 10.0

Deliver = Callable[[str, int, list[bytes]], None]


def _role_depth(plan: LaneGraphPlan) -> int:
    """The most roles a message can pass through, ingress to egress."""
    writer_roles = {name: [w[5:] for w in lp.writers if w.startswith("role:")] for name, lp in plan.lanes.items()}
    depth: dict[str, int] = {}
    for rp in plan.roles:  # topological order
        depth[rp.name] = 1 + max((depth.get(w, 0) for ref in rp.inputs for w in writer_roles[ref.lane]),
                                 default=0)
    return max(depth.values(), default=0)


class MpGraph:
    """Runs a LaneGraph with one process per role (module docstring)."""

    preferred_batch = 4096

    def __init__(self, spec: LaneGraphSpecV1, plan: LaneGraphPlan, *, deliver: Deliver,
                 context: StageContext, journal_dir: str, fsync: str, spec_hash: str, lane_path: str,
                 wait: str, tuning: TuningPlan | None = None,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S, output: NativeOutput | None = None) -> None:
        self.spec = spec
        self.plan = plan
        self.context = context
        self.journal_dir = journal_dir
        self.fsync = fsync
        self.spec_hash = spec_hash
        self.lane_path = lane_path
        self.wait_name = wait
        self.wait = int(getattr(_native, f"WAIT_{wait.upper()}"))
        self.tuning = tuning
        self._deliver = deliver
        self._heartbeat_timeout = heartbeat_timeout
        self.rings: dict[str, Any] = {}
        self.created: list[str] = []
        self.stats: dict[str, RoleStats] = {}
        self.supervisor: Supervisor | None = None
        self.procs: dict[str, StageProcess] = {}
        self.subs: list[JournalSubscription] = []
        self.stopped: set[str] = set()
        self.journal_starts: dict[str, int] = {}
        self.ingress = tuple(ep for ep, _lane in plan.ingress)
        self._in_lanes = [lane for _ep, lane in plan.ingress]
        self._in_writers: dict[str, JournalWriter] = {}
        self._ingress_journaled: dict[str, int] = {}
        self._ingress_drops: dict[str, int] = {lane: 0 for lane in self._in_lanes}
        self._taken = [0] * len(self.ingress)
        self._ingress_done = False
        self._threads: list[threading.Thread] = []
        self._egress_pos: dict[tuple[str, int], int] = {}
        self._egress_done: set[str] = set()
        self._failure: BaseException | None = None
        self._aborted = threading.Event()
        self._last_state = 0.0
        self._events_paths: list[str] = []
        self._depth = _role_depth(plan)
        self._epoch: tuple[tuple[int, ...], dict[str, int], int] | None = None
        self._done: tuple[int, ...] = tuple(0 for _ in self.ingress)
        self.messages_in = 0
        self._out: dict[str, int] = {ref.who.split(":", 1)[1]: 0 for ref in plan.egress}
        self.counters: counters.CountersFile | None = None
        self._row = counters.Row.detached()
        self._started = False
        self._closed = False
        self._output = output
        self._native_egress: dict[str, Any] = {}  # egress endpoint -> its native Egress (``output``)
        self._ingest: Any = None  # the native Ingest while :meth:`ingest` runs one
        self._ingested = 0

    # -- start ----------------------------------------------------------------------------------------

    def start(self) -> None:
        root = Path(self.lane_path)
        for name, lp in self.plan.lanes.items():
            if lp.kind != "journal" and os.path.exists(lane_file(self.lane_path, name, lp.kind)):
                raise ShmError(f"{lane_file(self.lane_path, name, lp.kind)} exists: another run uses this lane "
                               "path, or a stopped run left it behind (remove it, or pass another --lane-path)")
        private_ring_dir(root)  # ours, 0700, not planted by another user
        self._started = True
        try:
            self._setup(root)
        except BaseException:
            self.abort()
            raise

    def _setup(self, root: Path) -> None:
        spec_file = root / "spec.kv"
        write_bytes_atomic(spec_file, canonical_bytes(self.spec))
        self.created.append(str(spec_file))
        ensure_private_dir(root / "roles")
        counters_file = counters.counters_path(self.lane_path)
        self.counters = counters.CountersFile.create(
            counters_file, [("session", counters.KIND_SESSION, 0),
                            *((rp.name, counters.KIND_ROLE, 0) for rp in self.plan.roles)])
        self.created.append(counters_file)
        self._row = self.counters.row(0)
        for name, lp in self.plan.lanes.items():
            if lp.kind == "journal":
                directory = journal_lane_dir(self.journal_dir, name)
                ensure_private_dir(directory)
                self.journal_starts[name] = JournalReader(directory).positions()[1]
                continue
            self.rings[name] = create_lane(self.lane_path, lane_spec(lp), self.spec_hash)
            self.created.append(lane_file(self.lane_path, name, lp.kind))
        for lane in self._in_lanes:
            if lane not in self.rings and lane not in self._in_writers:
                lp = self.plan.lane(lane)
                self._in_writers[lane] = JournalWriter(journal_lane_dir(self.journal_dir, lane),
                                                       segment_bytes=lp.segment_bytes, slot_bytes=lp.slot_bytes,
                                                       fsync=self.fsync, spec_hash=self.spec_hash)
                self._ingress_journaled[lane] = 0
        ctx = context_to_json(self.context)
        procs: list[StageProcess] = []
        pending: dict[str, Callable[[], bool]] = {}
        for rp in self.plan.roles:
            stats_path = str(root / "roles" / f"{rp.name}.stats")
            self.stats[rp.name] = RoleStats(stats_path, create=True)
            self.created.append(stats_path)
            events_path = str(root / "roles" / f"{rp.name}.events")
            cfg: dict[str, Any] = {
                "lane_path": self.lane_path, "role": rp.name, "wait": self.wait, "spec_hash": self.spec_hash,
                "journal_dir": self.journal_dir, "fsync": self.fsync, "journal_starts": self.journal_starts,
                "context": ctx, "stats_path": stats_path,
                "error_path": str(root / "roles" / f"{rp.name}.error"),
                "events_path": events_path,
                "counters": [counters_file, 1 + len(procs)],
            }
            self._events_paths.append(events_path)
            if self.tuning is not None:
                cfg["tuning"] = self.tuning.to_json(str(root / RUNTIME_CONFIG_FILE))
            label = f"role {rp.name!r}"
            procs.append(StageProcess(shard=0, index=len(procs), consumer=0, name=label, config=cfg,
                                      row=self.counters.row(1 + len(procs))))
            pending[label] = self._work_probe(rp.name)
        stats_by_proc = {f"role {name!r}": st for name, st in self.stats.items()}

        def probe(sp: StageProcess) -> tuple[bool, int | None]:
            """Input waiting (only then must a role beat: idle roles may sleep), and the heartbeat
            of the role's stats file when the current process wrote it."""
            stats = stats_by_proc[sp.name]
            beat = stats.heartbeat if sp.proc is not None and stats.pid == sp.proc.pid else None
            return pending[sp.name](), beat

        self.supervisor = Supervisor([], procs, on_failure=self._on_failure,
                                     heartbeat_timeout=self._heartbeat_timeout,
                                     main_module="byteor.runtime.lanegraph._role_main", probe=probe)
        self.procs = {rp.name: sp for rp, sp in zip(self.plan.roles, procs, strict=True)}
        self.supervisor.start()
        self.supervisor.run_in_thread()
        for ref in self.plan.egress:
            ep = ref.who.split(":", 1)[1]
            if ref.lane in self.rings and self._output is not None:
                target: Callable[[], None] = self._native_ring_egress(ep, ref.lane, ref.cell, self._output)
            elif ref.lane in self.rings:
                target = self._ring_egress(ep, ref.lane, ref.cell)
            else:
                sub = JournalReader(journal_lane_dir(self.journal_dir, ref.lane)).subscribe(
                    self.journal_starts[ref.lane])
                self.subs.append(sub)
                target = self._journal_egress(ep, ref.lane, ref.cell, sub)
            t = threading.Thread(target=target, name=f"byteor-egress-{ep}", daemon=True)
            t.start()
            self._threads.append(t)

    def _work_probe(self, role: str) -> Callable[[], bool]:
        rp = next(r for r in self.plan.roles if r.name == role)
        rings = [(self.rings[ref.lane], ref.cell) for ref in rp.inputs if ref.lane in self.rings]
        journals = [(k, ref.lane) for k, ref in enumerate(rp.inputs) if ref.lane not in self.rings]
        stats = self.stats[role]

        def has_work() -> bool:
            if any(ring.gating(c) < ring.cursor() for ring, c in rings):
                return True
            for k, lane in journals:
                pos = stats.journal_pos(k) or self.journal_starts[lane]
                if self._journal_end(lane) > pos:
                    return True
            return False

        return has_work

    def _journal_end(self, lane: str) -> int:
        """Records written to a journal lane so far (from the writers' counters, no disk scan)."""
        end = self.journal_starts.get(lane, 0) + self._ingress_journaled.get(lane, 0)
        for rp in self.plan.roles:
            for k, out in enumerate(rp.outputs):
                if out == lane:
                    end += self.stats[rp.name].written(k)
        return end

    # -- egress threads -----------------------------------------------------------------------------

    def _on_failure(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    def _egress_progress(self) -> tuple[int, ...]:
        self._sync_native()
        return tuple(self._out.values())

    def _settle(self) -> None:
        """After a failure: let egress deliver what the other roles still finish, then stop it."""
        if not self._aborted.is_set():
            wait_quiet(self._egress_progress)
            self._stop_egress()

    def _stop_egress(self) -> None:
        self._aborted.set()
        for egress in self._native_egress.values():
            egress.stop()

    def _ring_egress(self, ep: str, lane: str, cell: int) -> Callable[[], None]:
        ring = self.rings[lane]
        deliver = self._deliver
        key = (lane, cell)

        def run() -> None:
            drain, release = ring.drain, ring.release
            try:
                while not self._aborted.is_set():
                    # every message available in one native call; released only once delivered, so
                    # what an epoch counts as out of the graph has reached the sink
                    batch, _dropped, hi = drain(cell, _EGRESS_BATCH, self.wait, _POLL_NS, release=False)
                    if hi < 0:
                        if ring.stop_requested() and int(ring.gating(cell)) >= int(ring.cursor()):
                            return
                        continue
                    if batch:
                        deliver(ep, 0, batch)
                        self._out[ep] += len(batch)
                        self._row.set(_OUT, sum(self._out.values()))
                    release(cell, hi)
                    self._egress_pos[key] = hi + 1
            except BaseException as exc:  # handed to the session by tick()/drain()
                self._on_failure(exc)
                self._stop_egress()
            finally:
                self._egress_done.add(ep)

        return run

    def _native_ring_egress(self, ep: str, lane: str, cell: int, out: NativeOutput) -> Callable[[], None]:
        """Egress in C (``_native.Egress``): encode and write every message of the lane cell to the
        output descriptor, releasing up to what is written; counts are read by :meth:`tick`."""
        flush_ns = min(max(int(out.flush_interval * 1e9), 1_000_000), 1_000_000_000)
        egress = _native.Egress(out.fd, out.framing, self.rings[lane], cell, wait=self.wait, label=out.label,
                                flush_interval_ns=flush_ns)
        self._native_egress[ep] = egress

        def run() -> None:
            try:
                if not self._aborted.is_set():
                    egress.run()
            except BrokenPipeError as exc:  # the reader went away (`| head`): the CLI exits quietly
                self._on_failure(exc)
                self._stop_egress()
            except OSError as exc:  # the message names the option and the reason
                self._on_failure(PipelineFailed(str(exc)))
                self._stop_egress()
            except BaseException as exc:
                self._on_failure(exc)
                self._stop_egress()
            finally:
                self._out[ep] = int(egress.messages)
                self._egress_done.add(ep)

        return run

    def _journal_egress(self, ep: str, lane: str, cell: int, sub: JournalSubscription) -> Callable[[], None]:
        deliver = self._deliver
        key = (lane, cell)

        def run() -> None:
            try:
                while not self._aborted.is_set():
                    stopped = lane in self.stopped  # look before polling: nothing is written after it
                    batch = sub.poll(4096)
                    if batch:
                        deliver(ep, 0, batch)
                        self._out[ep] += len(batch)
                        self._row.set(_OUT, sum(self._out.values()))
                        self._egress_pos[key] = sub.position
                        continue
                    if stopped and sub.position >= self._journal_end(lane):
                        return
                    time.sleep(0.001)
            except BaseException as exc:
                self._on_failure(exc)
                self._aborted.set()
            finally:
                self._egress_done.add(ep)

        return run

    # -- ingress ------------------------------------------------------------------------------------

    def offer(self, endpoint: int, items: Sequence[bytes], timeout: float = 0.05) -> int:
        """Publish a prefix of ``items`` into the lane of ingress ``endpoint`` under its on_full
        policy; wait at most ``timeout`` seconds for room. Returns how many were taken (published,
        or dropped by ``drop_newest``)."""
        self._check_failure()
        lane = self._in_lanes[endpoint]
        lp = self.plan.lane(lane)
        if lane not in self.rings or lp.on_full != "block":  # publish_many checks the lengths itself
            self._check_sizes(lane, items)
        writer = self._in_writers.get(lane)
        if writer is not None:
            for msg in items:
                writer.append(msg)
            self._ingress_journaled[lane] += len(items)
            taken = len(items)
        else:
            taken = self._publish(self.rings[lane], lane, lp.on_full, items, timeout)
        self._taken[endpoint] += taken
        self.messages_in += taken
        self._row.set(_IN, self.messages_in)
        return taken

    def _check_sizes(self, lane: str, items: Sequence[bytes]) -> None:
        limit = self.plan.lane(lane).slot_bytes
        big = next((len(msg) for msg in items if len(msg) > limit), None)
        if big is not None:
            raise oversize(lane, big, limit)

    def _publish(self, ring: Any, lane: str, policy: str, items: Sequence[bytes], timeout: float) -> int:
        if policy == "block":
            before = int(ring.cursor())
            try:
                ring.publish_many(items, self.wait, int(timeout * 1e9))
                return len(items)
            except TimeoutError:
                return int(ring.cursor()) - before  # publish_many publishes what fits before it waits
            except ValueError:  # it checked every length before publishing anything
                self._check_sizes(lane, items)
                raise
        taken = 0
        for msg in items:
            if not ring.try_publish(msg):
                if policy == "fail":
                    raise PipelineFailed(f"lane {lane!r} is full (on_full=fail): the pipeline stops")
                self._ingress_drops[lane] += 1
            taken += 1
        return taken

    # -- progress -------------------------------------------------------------------------------------

    def mark(self) -> tuple[int, ...]:
        return tuple(self._taken)

    def _writes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.plan.lanes:
            ring = self.rings.get(name)
            out[name] = int(ring.cursor()) + 1 if ring is not None else self._journal_end(name)
        return out

    def _reads_reach(self, target: dict[str, int]) -> bool:
        for name, lp in self.plan.lanes.items():
            ring = self.rings.get(name)
            for ref in lp.readers:
                if ring is not None:
                    read = int(ring.gating(ref.cell)) + 1
                elif ref.who.startswith("egress:"):
                    read = self._egress_pos.get((name, ref.cell), self.journal_starts.get(name, 0))
                else:
                    role = ref.who[5:]
                    k = next(i for i, inp in enumerate(self.procs_plan(role).inputs) if inp.lane == name)
                    read = self.stats[role].journal_pos(k) or self.journal_starts.get(name, 0)
                if read < target[name]:
                    return False
        return True

    def procs_plan(self, role: str) -> Any:
        return next(r for r in self.plan.roles if r.name == role)

    def _advance_epoch(self) -> None:
        if self._epoch is None:
            self._epoch = (tuple(self._taken), self._writes(), 0)
        counts, target, phase = self._epoch
        if not self._reads_reach(target):
            return
        if phase >= self._depth:
            self._done = counts
            self._epoch = None
        else:
            self._epoch = (counts, self._writes(), phase + 1)

    def progress(self) -> tuple[int, ...]:
        """Per ingress endpoint, how many taken messages are known to be out of the graph."""
        self._advance_epoch()
        return self._done

    # -- housekeeping, drain ------------------------------------------------------------------------

    def _check_failure(self) -> None:
        sup = self.supervisor
        failure = sup.failure if sup is not None and sup.failure is not None else self._failure
        if failure is not None:
            self._settle()
            raise failure

    @property
    def native_output(self) -> bool:
        """Whether egress writes the output descriptor itself (no sink calls)."""
        return self._output is not None

    @property
    def ingest_supported(self) -> bool:
        """Whether :meth:`ingest` can feed this graph: one ingress endpoint, on a ring lane that
        blocks when full (the native reader waits for room; it never drops or fails)."""
        if len(self._in_lanes) != 1 or self._in_lanes[0] not in self.rings:
            return False
        return self.plan.lane(self._in_lanes[0]).on_full == "block"

    def ingest(self, fd: int, framing: str, *, label: str, error: type[BaseException]) -> Any:
        """A native reader of ``fd`` (``_native.Ingest``: parsing in C, GIL released) publishing into
        the one ingress lane (see :attr:`ingest_supported`). The caller runs it and calls
        :meth:`ingested` when it returned; meanwhile nothing else may publish."""
        self._check_failure()
        self._ingested = self._taken[0]
        self._ingest = _native.Ingest(fd, framing, [self.rings[self._in_lanes[0]]], wait=self.wait, label=label,
                                      error=error)
        return self._ingest

    def ingested(self) -> None:
        """The native reader of :meth:`ingest` returned: its messages count as taken."""
        self._sync_native()
        self._ingest = None

    def _sync_native(self) -> None:
        if self._ingest is not None:
            taken = self._ingested + int(self._ingest.messages)
            self.messages_in += taken - self._taken[0]
            self._taken[0] = taken
            self._row.set(_IN, self.messages_in)
        if self._native_egress:
            for ep, egress in self._native_egress.items():
                self._out[ep] = int(egress.messages)
            self._row.set(_OUT, sum(self._out.values()))

    def tick(self) -> None:
        """From the session's thread, often: failures, lane stops, epochs, the state file."""
        self._sync_native()
        self._check_failure()
        self._propagate_stops()
        self._advance_epoch()
        now = time.monotonic()
        if now - self._last_state > _STATE_EVERY_S:
            self._last_state = now
            self._row.set(_DROPPED, self.dropped)
            write_state(os.path.join(self.lane_path, STATE_FILE), self.state())

    def drain(self) -> None:
        """Stop the ingress lanes and wait until every role exited and every egress delivered."""
        self._ingress_done = True
        for lane in self._in_lanes:
            if lane not in self.stopped:
                self._stop_lane(lane)
        assert self.supervisor is not None
        self.supervisor.expect_exits()
        while True:
            self.tick()
            if self.supervisor.all_finished() and all(not t.is_alive() for t in self._threads):
                break
            time.sleep(0.002)
        self._check_failure()
        self._done = tuple(self._taken)

    def _stop_lane(self, lane: str) -> None:
        self.stopped.add(lane)
        ring = self.rings.get(lane)
        if ring is not None:
            ring.request_stop()
            return
        writer = self._in_writers.get(lane)
        if writer is not None:
            writer.close()
        marker = stop_marker(self.lane_path, lane)
        Path(marker).touch()
        self.created.append(marker)

    def _propagate_stops(self) -> None:
        for name, lp in self.plan.lanes.items():
            if name in self.stopped:
                continue
            done = True
            for writer in lp.writers:
                kind, who = writer.split(":", 1)
                finished = self._ingress_done if kind == "ingress" else self.procs[who].finished
                done = done and finished
            if done:
                self._stop_lane(name)

    # -- observe ------------------------------------------------------------------------------------

    @property
    def messages_out(self) -> int:
        return sum(self._out.values())

    @property
    def dropped(self) -> int:
        """Messages dropped on purpose: by a lane under ``on_full=drop_newest``, or by a stage."""
        return sum(self.drops().values()) + sum(st.filtered for st in self.stats.values())

    def drops(self) -> dict[str, int]:
        out = dict.fromkeys(self.plan.lanes, 0)
        for rp in self.plan.roles:
            st = self.stats.get(rp.name)
            if st is not None:
                for k, name in enumerate(rp.outputs):
                    out[name] += st.drops(k)
        for lane, n in self._ingress_drops.items():
            out[lane] += n
        return out

    def restarts(self) -> dict[str, int]:
        return {name: sp.total_restarts for name, sp in self.procs.items() if sp.total_restarts}

    def stage_pids(self) -> list[int]:
        return self.supervisor.pids() if self.supervisor is not None else []

    def fill(self) -> float | None:
        best = 0.0
        for name, ring in self.rings.items():
            lp = self.plan.lane(name)
            with contextlib.suppress(Exception):
                low = min(int(ring.gating(c)) for c in range(lp.cells))
                best = max(best, (int(ring.cursor()) - low) / lp.capacity)
        return best

    def state(self) -> dict[str, Any]:
        state = new_state(self.spec.name, self.spec_hash, runner="mp", lane_path=self.lane_path,
                          journal_dir=self.journal_dir)
        written: dict[str, int] = dict.fromkeys(self.plan.lanes, 0)
        jreads: dict[str, dict[int, int]] = {name: {} for name in self.plan.lanes}
        for rp in self.plan.roles:
            st = self.stats[rp.name]
            for k, out in enumerate(rp.outputs):
                written[out] += st.written(k)
            for k, ref in enumerate(rp.inputs):
                pos = st.journal_pos(k)
                jreads[ref.lane][ref.cell] = pos if pos else self.journal_starts.get(ref.lane, 0)
        for (lane, cell), pos in self._egress_pos.items():
            if lane not in self.rings:
                jreads[lane][cell] = pos
        drops = self.drops()
        for name, lp in self.plan.lanes.items():
            ring = self.rings.get(name)
            repaired = 0
            if ring is not None:
                repaired = int(ring.repaired)
                write_pos = int(ring.cursor()) + 1
                reads = [int(ring.gating(c)) + 1 for c in range(lp.cells)]
                path: str | None = lane_file(self.lane_path, name, lp.kind)
            else:
                start = self.journal_starts.get(name, 0)
                write_pos = start + written[name] + self._ingress_journaled.get(name, 0)
                reads = [jreads[name].get(c, start) for c in range(len(lp.readers))]
                path = str(journal_lane_dir(self.journal_dir, name))
            state["lanes"].append(lane_state_entry(
                name=name, kind=lp.kind, capacity=lp.capacity, slot_bytes=lp.slot_bytes, on_full=lp.on_full,
                write_pos=write_pos, read_pos=reads, drops=drops[name], path=path, repaired=repaired,
            ))
        for rp in self.plan.roles:
            st = self.stats[rp.name]
            sp = self.procs[rp.name]
            alive = sp.proc is not None and sp.proc.poll() is None
            state["roles"].append(role_state_entry(
                name=rp.name, kind=rp.kind, pid=sp.proc.pid if sp.proc is not None else None, alive=alive,
                messages_in=st.messages_in, messages_out=sum(st.written(k) for k in range(len(rp.outputs))),
                restarts=sp.total_restarts,
            ))
        state["taken_unix_ms"] = int(time.time() * 1000)
        return state

    # -- teardown -----------------------------------------------------------------------------------

    def abort(self) -> None:
        """Stop at once (kill the roles, stop egress) and remove the lane files."""
        self._aborted.set()
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_egress()
        if self._ingest is not None:
            self._ingest.stop()
        if self.supervisor is not None:
            self.supervisor.stop(kill=True)
        for t in self._threads:
            t.join(timeout=10)
        for writer in self._in_writers.values():
            writer.close()
        for sub in self.subs:
            sub.close()
        for ring in self.rings.values():
            with contextlib.suppress(Exception):
                ring.close()
        for st in self.stats.values():
            st.close()
        self._row = counters.Row.detached()
        if self.counters is not None:
            self.counters.close()
            self.counters = None
        for path in self.created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        recorder = self.context.recorder
        for path in self._events_paths:  # side-effect records of the role processes
            if isinstance(recorder, EventLog):
                recorder.merge_file(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self.supervisor is not None:  # our role processes wrote it (never another run's)
            if self.tuning is not None and not self.tuning.effective:
                with contextlib.suppress(Exception):
                    self.tuning.effective.update(read_tuning(self.lane_path) or {})
            remove_runtime_config(self.lane_path)
        if not self._started:
            return
        root = Path(self.lane_path)
        with contextlib.suppress(FileNotFoundError):
            (root / STATE_FILE).unlink()
        for leftover in (root / "roles").glob("*.error") if (root / "roles").is_dir() else []:
            leftover.unlink()
        with contextlib.suppress(OSError):
            (root / "roles").rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
