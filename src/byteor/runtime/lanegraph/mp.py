"""The multi-process LaneGraph runner: one process per role under the runtime's supervisor.

Layout under the lane path (default ``/dev/shm/byteor/<name>-<hash8>/``): ``spec.kv`` (the canonical
spec every role re-plans from), one ring file per ``events``/``mpsc``/``fanout`` lane
(``<lane>.<kind>.ring``, see :mod:`byteor.lanes.shm`), ``roles/<role>.stats`` counters,
``lane_graph_state.json`` (refreshed about every 200 ms; ``snapshot --lane-path`` reads it). Journal
lanes live on disk under the journal directory. Everything in the lane path is removed at the end.

The calling thread is the ingress and egress endpoint: it publishes the input (never blocking
indefinitely: while the ingress lane is full under ``block`` it drains egress) and calls
``outputs(endpoint, msg)`` for each egress message; the input iterable is read by a pump thread, so
an input that pauses never holds egress back. Shutdown drains: when the input ends the ingress
lane is stopped; a lane is stopped once all its writers have exited; a role exits once all its
inputs are stopped and drained; the run ends when every role exited and every egress is drained.

Roles that die are restarted by :class:`byteor.runtime.supervisor.Supervisor` (at most 5 deaths a
minute, then the run fails naming the role); a role that fails on its own terms (``on_full=fail``, a
stage exception) stops the run with :class:`~byteor.PipelineFailed` naming the lane or role.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ... import _native
from ..._errors import PipelineFailed, ShmError
from ..._fileio import write_bytes_atomic
from ..._stage import StageContext
from ...lanes.journal import JournalReader, JournalSubscription, JournalWriter
from ...lanes.shm import LaneReader, create_lane, lane_file
from ...spec.kv import canonical_bytes
from ...spec.model import LaneGraphSpecV1
from .._events import EventLog
from .._tuning import RUNTIME_CONFIG_FILE, TuningPlan, read_tuning, remove_runtime_config
from ..mp import _context_json
from ..supervisor import StageProcess, Supervisor
from ._role_main import lane_spec, stop_marker
from ._roles import LaneGraphResult, journal_lane_dir, resolve_role_stage, role_index
from ._stats import RoleStats
from .plan import LaneGraphPlan
from .state import STATE_FILE, lane_state_entry, new_state, role_state_entry, write_state

__all__ = ["run_mp"]

_Egress = tuple[str, "LaneReader | None", "JournalSubscription | None", str]

_STATE_EVERY_S = 0.2
#: A role with input waiting and no heartbeat for this long is hung: killed and restarted.
HEARTBEAT_TIMEOUT_S = 10.0


class _InputPump:
    """Reads the input iterable in a thread, so a slow or interactive input (a terminal, a pipe
    that pauses) never keeps the calling thread from serving egress. Bounded: the reader waits
    while ``limit`` messages are buffered. An exception from the input is re-raised by ``take``."""

    def __init__(self, inputs: Iterable[bytes], limit: int = 65536) -> None:
        self._source = inputs
        self._buf: deque[bytes] = deque()
        self._limit = limit
        self._space = threading.Event()
        self._space.set()
        self._done = False
        self._halt = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="byteor-lanegraph-input", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for msg in self._source:
                if self._halt:
                    return
                self._buf.append(bytes(msg))
                if len(self._buf) >= self._limit:
                    self._space.clear()
                    if len(self._buf) >= self._limit:
                        self._space.wait()
        except BaseException as exc:  # handed to the calling thread by take()
            self._error = exc
        finally:
            self._done = True

    def take(self) -> bytes | None:
        """The next input message, or None when none is buffered right now (or the input ended)."""
        try:
            msg = self._buf.popleft()
        except IndexError:
            if self._done and self._error is not None:
                error, self._error = self._error, None
                raise error from None
            return None
        if len(self._buf) < self._limit // 2:
            self._space.set()
        return msg

    def finished(self) -> bool:
        return self._done and not self._buf and self._error is None

    def stop(self) -> None:
        self._halt = True
        self._space.set()


def _wait_code(wait: str) -> int:
    code: int = getattr(_native, f"WAIT_{wait.upper()}")
    return code


def run_mp(
    spec: LaneGraphSpecV1,
    plan: LaneGraphPlan,
    *,
    inputs: Iterable[bytes],
    outputs: Callable[[str, bytes], None],
    context: StageContext,
    journal_dir: str,
    fsync: str,
    spec_hash: str,
    lane_path: str,
    wait: str,
    progress: Callable[[dict[str, Any]], None] | None = None,
    tuning: TuningPlan | None = None,
) -> LaneGraphResult:
    """Run ``plan`` with one process per role (module docstring). Returns the final state; its
    ``tuning`` holds the knob states the role processes recorded (when ``tuning`` was given)."""
    for rp in plan.roles:
        if rp.kind == "stage":  # resolve once here too: a bad key fails before any process starts
            resolved = resolve_role_stage(role_index(spec, rp), rp.role, context)
            if resolved.close is not None:
                resolved.close()
    root = Path(lane_path)
    root.mkdir(parents=True, exist_ok=True)
    for name, lp in plan.lanes.items():
        if lp.kind != "journal" and os.path.exists(lane_file(lane_path, name, lp.kind)):
            raise ShmError(f"{lane_file(lane_path, name, lp.kind)} exists: another run uses this lane path, "
                           "or a stopped run left it behind (remove it, or pass another --lane-path)")
    run = _Run(spec, plan, context=context, journal_dir=journal_dir, fsync=fsync, spec_hash=spec_hash,
               lane_path=lane_path, wait=wait, tuning=tuning)
    try:
        return run.execute(inputs, outputs, progress)
    finally:
        run.cleanup()


class _Run:
    def __init__(self, spec: LaneGraphSpecV1, plan: LaneGraphPlan, *, context: StageContext, journal_dir: str,
                 fsync: str, spec_hash: str, lane_path: str, wait: str,
                 tuning: TuningPlan | None = None) -> None:
        self.spec = spec
        self.plan = plan
        self.context = context
        self.journal_dir = journal_dir
        self.fsync = fsync
        self.spec_hash = spec_hash
        self.lane_path = lane_path
        self.wait = _wait_code(wait)
        self.rings: dict[str, Any] = {}
        self.created: list[str] = []
        self.stats: dict[str, RoleStats] = {}
        self.supervisor: Supervisor | None = None
        self.journal_writer: JournalWriter | None = None
        self.subs: list[JournalSubscription] = []
        self.stopped: set[str] = set()
        self.ingress_drops = 0
        self.ingress_journaled = 0
        self.ingress_done = False
        self.journal_starts: dict[str, int] = {}
        self.pump: _InputPump | None = None
        self.egress_journal_pos: dict[str, int] = {}
        self.tuning = tuning
        self.events_paths: list[str] = []

    # -- setup --------------------------------------------------------------------------------------

    def _setup(self) -> None:
        root = Path(self.lane_path)
        spec_file = root / "spec.kv"
        write_bytes_atomic(spec_file, canonical_bytes(self.spec))
        self.created.append(str(spec_file))
        (root / "roles").mkdir(exist_ok=True)
        for name, lp in self.plan.lanes.items():
            if lp.kind == "journal":
                directory = journal_lane_dir(self.journal_dir, name)
                directory.mkdir(parents=True, exist_ok=True)
                self.journal_starts[name] = JournalReader(directory).positions()[1]
                continue
            ring = create_lane(self.lane_path, lane_spec(lp), self.spec_hash)
            self.created.append(lane_file(self.lane_path, name, lp.kind))
            self.rings[name] = ring
        ctx = _context_json(self.context)
        procs: list[StageProcess] = []
        pending: dict[str, Callable[[], bool]] = {}
        for rp in self.plan.roles:
            stats_path = str(root / "roles" / f"{rp.name}.stats")
            self.stats[rp.name] = RoleStats(stats_path, create=True)
            self.created.append(stats_path)
            events_path = str(root / "roles" / f"{rp.name}.events")
            cfg = {
                "lane_path": self.lane_path, "role": rp.name, "wait": self.wait, "spec_hash": self.spec_hash,
                "journal_dir": self.journal_dir, "fsync": self.fsync, "journal_starts": self.journal_starts,
                "context": ctx, "stats_path": stats_path,
                "error_path": str(root / "roles" / f"{rp.name}.error"),
                "events_path": events_path,
            }
            self.events_paths.append(events_path)
            if self.tuning is not None:
                cfg["tuning"] = self.tuning.to_json(str(root / RUNTIME_CONFIG_FILE))
            label = f"role {rp.name!r}"
            procs.append(StageProcess(shard=0, index=len(procs), consumer=0, name=label, config=cfg))
            pending[label] = self._work_probe(rp.name)
        stats_by_proc = {f"role {name!r}": st for name, st in self.stats.items()}

        def probe(sp: StageProcess) -> tuple[bool, int | None]:
            """Input waiting (only then must a role beat: idle roles may sleep), and the heartbeat
            of the role's stats file when the current process wrote it."""
            stats = stats_by_proc[sp.name]
            beat = stats.heartbeat if sp.proc is not None and stats.pid == sp.proc.pid else None
            return pending[sp.name](), beat

        # role processes (and their restarts) import py: stages the way this process does
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.supervisor = Supervisor([], procs, on_failure=lambda exc: None,
                                     heartbeat_timeout=HEARTBEAT_TIMEOUT_S,
                                     main_module="byteor.runtime.lanegraph._role_main", env=env, probe=probe)
        self.procs = {rp.name: sp for rp, sp in zip(self.plan.roles, procs, strict=True)}
        self.supervisor.start()
        self.supervisor.run_in_thread()

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
        end = self.journal_starts.get(lane, 0)
        if self.plan.ingress[0][1] == lane:
            end += self.ingress_journaled
        for rp in self.plan.roles:
            for k, out in enumerate(rp.outputs):
                if out == lane:
                    end += self.stats[rp.name].written(k)
        return end

    # -- the run ------------------------------------------------------------------------------------

    def execute(self, inputs: Iterable[bytes], outputs: Callable[[str, bytes], None],
                progress: Callable[[dict[str, Any]], None] | None) -> LaneGraphResult:
        self._setup()
        assert self.supervisor is not None
        result = LaneGraphResult()
        ingress_lane = self.plan.ingress[0][1]
        lp = self.plan.lane(ingress_lane)
        in_ring = self.rings.get(ingress_lane)
        if in_ring is None:
            self.journal_writer = JournalWriter(journal_lane_dir(self.journal_dir, ingress_lane),
                                                segment_bytes=lp.segment_bytes, slot_bytes=lp.slot_bytes,
                                                fsync=self.fsync, spec_hash=self.spec_hash)
        egress: list[_Egress] = []
        for ref in self.plan.egress:
            ep = ref.who.split(":", 1)[1]
            if ref.lane in self.rings:
                ring_reader = LaneReader(self.rings[ref.lane], ref.lane, ref.cell, self.wait)
                egress.append((ep, ring_reader, None, ref.lane))
            else:
                directory = journal_lane_dir(self.journal_dir, ref.lane)
                jsub = JournalReader(directory).subscribe(self.journal_starts[ref.lane])
                self.subs.append(jsub)
                egress.append((ep, None, jsub, ref.lane))
        pump = _InputPump(inputs)
        self.pump = pump
        pending: bytes | None = None
        starved = False
        policy = lp.on_full
        slot = lp.slot_bytes
        last_state = 0.0
        while True:
            self._check_failure()
            # ingress: publish until the lane is full, the input ends, or a batch is done
            published = 0
            starved = False
            while not self.ingress_done and published < 4096:
                if pending is None:
                    pending = pump.take()
                    if pending is None:
                        if pump.finished():
                            self.ingress_done = True
                        else:
                            starved = True  # the input has nothing right now: serve egress meanwhile
                        break
                    result.messages_in += 1
                    if len(pending) > slot:
                        raise PipelineFailed(f"message of {len(pending)} bytes exceeds lane {ingress_lane!r} "
                                             f"slot_bytes={slot}")
                if in_ring is None:
                    assert self.journal_writer is not None
                    self.journal_writer.append(pending)
                    self.ingress_journaled += 1
                elif not in_ring.try_publish(pending):
                    if policy == "fail":
                        raise PipelineFailed(
                            f"lane {ingress_lane!r} is full (on_full=fail): the pipeline stops"
                        )
                    if policy == "drop_newest":
                        self.ingress_drops += 1
                    else:
                        break  # block: drain egress, then try again
                pending = None
                published += 1
            if self.ingress_done and ingress_lane not in self.stopped:
                self._stop_lane(ingress_lane)
            # egress: drain whatever is there
            drained = 0
            for ep, reader, sub, _lane in egress:
                if reader is not None:
                    hi = reader.wait(0)
                    if hi >= 0:
                        first = reader.next
                        for seq in range(first, hi + 1):
                            outputs(ep, reader.ring.read_bytes(seq))
                            reader.release(seq)
                        drained += hi + 1 - first
                elif sub is not None:
                    for msg in sub.poll(4096):
                        outputs(ep, msg)
                        drained += 1
            result.messages_out += drained
            self._propagate_stops()
            now = time.monotonic()
            if now - last_state > _STATE_EVERY_S:
                last_state = now
                write_state(os.path.join(self.lane_path, STATE_FILE), self.state())
                if progress is not None:
                    progress({"messages_in": result.messages_in, "messages_out": result.messages_out})
            if self.ingress_done and self.supervisor.all_finished() and self._egress_finished(egress):
                break
            if not drained and (pending is not None or self.ingress_done or starved):
                self._idle(egress)
        self._check_failure()
        result.state = self.state()
        result.drops = {lane["name"]: lane["drops"] for lane in result.state["lanes"]}
        self._read_tuning()
        return result

    def _read_tuning(self) -> None:
        """Keep what the role processes recorded in runtime_config.txt (before cleanup removes it)."""
        if self.tuning is None or self.tuning.effective:
            return
        with contextlib.suppress(Exception):
            self.tuning.effective.update(read_tuning(self.lane_path) or {})

    def _idle(self, egress: list[_Egress]) -> None:
        """Wait briefly for something to do (at most ~1 ms; the input pump may bring a message)."""
        for _ep, reader, _sub, _lane in egress:
            if reader is not None and not reader.finished():
                reader.wait(1_000_000)
                return
        time.sleep(0.001)

    def _egress_finished(self, egress: list[_Egress]) -> bool:
        for _ep, reader, sub, lane in egress:
            if reader is not None and not reader.finished():
                return False
            # a stopped journal lane's writers have exited, so their counters are final
            if sub is not None and (lane not in self.stopped or sub.position < self._journal_end(lane)):
                return False
        return True

    def _check_failure(self) -> None:
        assert self.supervisor is not None
        if self.supervisor.failure is not None:
            raise self.supervisor.failure

    def _stop_lane(self, lane: str) -> None:
        self.stopped.add(lane)
        ring = self.rings.get(lane)
        if ring is not None:
            ring.request_stop()
            return
        if self.journal_writer is not None and self.plan.ingress[0][1] == lane:
            self.journal_writer.close()
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
                finished = self.ingress_done if kind == "ingress" else self.procs[who].finished
                done = done and finished
            if done:
                self._stop_lane(name)

    # -- state --------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        state = new_state(self.spec.name, self.spec_hash, runner="mp", lane_path=self.lane_path,
                          journal_dir=self.journal_dir)
        written: dict[str, int] = {name: 0 for name in self.plan.lanes}
        drops: dict[str, int] = {name: 0 for name in self.plan.lanes}
        jreads: dict[str, dict[int, int]] = {name: {} for name in self.plan.lanes}
        for rp in self.plan.roles:
            st = self.stats[rp.name]
            for k, out in enumerate(rp.outputs):
                written[out] += st.written(k)
                drops[out] += st.drops(k)
            for k, ref in enumerate(rp.inputs):
                pos = st.journal_pos(k)
                jreads[ref.lane][ref.cell] = pos if pos else self.journal_starts.get(ref.lane, 0)
        drops[self.plan.ingress[0][1]] += self.ingress_drops
        for jsub in self.subs:
            for ref in self.plan.egress:
                if journal_lane_dir(self.journal_dir, ref.lane) == jsub.directory:
                    jreads[ref.lane][ref.cell] = jsub.position
        for name, lp in self.plan.lanes.items():
            ring = self.rings.get(name)
            if ring is not None:
                write_pos = int(ring.cursor()) + 1
                reads = [int(ring.gating(c)) + 1 for c in range(lp.cells)]
                path: str | None = lane_file(self.lane_path, name, lp.kind)
            else:
                start = self.journal_starts.get(name, 0)
                write_pos = start + written[name]
                if self.plan.ingress[0][1] == name:
                    write_pos += self.ingress_journaled
                reads = [jreads[name].get(c, start) for c in range(len(lp.readers))]
                path = str(journal_lane_dir(self.journal_dir, name))
            state["lanes"].append(lane_state_entry(
                name=name, kind=lp.kind, capacity=lp.capacity, slot_bytes=lp.slot_bytes, on_full=lp.on_full,
                write_pos=write_pos, read_pos=reads, drops=drops[name], path=path,
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

    def cleanup(self) -> None:
        if self.pump is not None:
            self.pump.stop()
        if self.supervisor is not None:
            self.supervisor.stop(kill=True)
        if self.journal_writer is not None:
            self.journal_writer.close()
        for sub in self.subs:
            sub.close()
        for ring in self.rings.values():
            with contextlib.suppress(Exception):
                ring.close()
        for st in self.stats.values():
            st.close()
        for path in self.created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        recorder = self.context.recorder
        for path in self.events_paths:  # side-effect records of the role processes
            if isinstance(recorder, EventLog):
                recorder.merge_file(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self.supervisor is not None:  # our role processes wrote it (never another run's)
            self._read_tuning()
            remove_runtime_config(self.lane_path)
        root = Path(self.lane_path)
        with contextlib.suppress(FileNotFoundError):
            (root / STATE_FILE).unlink()
        for leftover in (root / "roles").glob("*.error") if (root / "roles").is_dir() else []:
            leftover.unlink()
        with contextlib.suppress(OSError):
            (root / "roles").rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
