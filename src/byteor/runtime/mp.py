"""The multi-process ``dedicated`` executor for SingleRing specs.

Layout: one ring file per shard, ``<ring_dir>/shard-<k>.ring`` (default ring directory
``/dev/shm/byteor/<name>-<hash8>/``). Consumer ``i`` of a ring is stage ``i``; its dependency mask is
``byteor.spec.semantics.effective_deps`` (declared deps plus the orderings the result rules imply); the last consumer is
the egress, which depends on every stage, so the producer is gated by the slowest of them.

Processes: the parent publishes (one call, one copy per message, or one batch claim for
``publish_many``) and runs one egress thread per ring that hands output messages, in sequence order,
to ``sink(shard, batch)``; a :class:`~byteor.runtime.supervisor.Supervisor` runs one child process per
stage per ring. Builtin stages run ``Ring.run_builtin`` (C, GIL released); Python and resolver stages
run ``Ring.run_stage`` (the core calls the function once per message in its form; writing forms
commit through the crash-atomic redo record).

Counters: ``<ring_dir>/counters.bin`` (:mod:`byteor.obs.counters`) has a ``session`` row (messages
in, out and dropped, written once per batch) and one row per stage process (``<stage id>``, shard
k), where the supervisor writes state, pid and restarts and the stage process counts its actions
and DataGuard outcomes; it outlives restarts and is removed with the rings.

Drain: :meth:`MpExecutor.close` sets the ring's ``stop`` word; every stage consumes everything
published and exits 0, the egress delivers the rest, then the ring files are unlinked.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _native
from .._errors import PipelineFailed, ShmError, UsageError
from .._stage import ResolvedStage, StageContext
from ..obs import counters
from ..spec.model import SingleRingSpecV1
from ..spec.semantics import effective_deps
from ._child import context_to_json
from ._events import EventLog
from ._stage_main import ROLE_EGRESS, ROLE_PRODUCER, ROLE_STAGE_BASE
from ._tuning import RUNTIME_CONFIG_FILE, TuningPlan, read_tuning, remove_runtime_config
from .sharding import BytesLike, Router
from .supervisor import StageProcess, Supervisor, wait_quiet

__all__ = ["DEFAULT_RING_ROOT", "WAITS", "BatchSink", "MpExecutor", "NativeOutput", "default_ring_dir", "ring_files",
           "tuning_role"]

DEFAULT_RING_ROOT = "/dev/shm/byteor"
WAITS: dict[str, int] = {
    "spin": _native.WAIT_SPIN,
    "yield": _native.WAIT_YIELD,
    "backoff": _native.WAIT_BACKOFF,
    "block": _native.WAIT_BLOCK,
}
_POLL_NS = 100_000_000
_IN, _OUT, _DROPPED = (counters.WORDS[w] for w in ("messages_in", "messages_out", "dropped"))

#: ``sink(shard, batch)`` receives the output messages of one ring, in sequence order.
BatchSink = Callable[[int, list[bytes]], None]


@dataclass(frozen=True)
class NativeOutput:
    """Where native egress writes instead of calling the sink: a file descriptor (not closed here),
    an output framing of :class:`byteor._native.Egress`, the option that names it in errors, and the
    longest a finished message may wait in the egress buffer (seconds)."""

    fd: int
    framing: str
    label: str
    flush_interval: float = 0.2


def default_ring_dir(spec: SingleRingSpecV1, spec_hash: str) -> str:
    """``/dev/shm/byteor/<name>-<hash8>/`` (hash8: the first 8 hex digits of the spec hash)."""
    return os.path.join(DEFAULT_RING_ROOT, f"{spec.name}-{spec_hash.removeprefix('sha256:')[:8]}")


def ring_files(ring_dir: str, shards: int) -> list[str]:
    return [os.path.join(ring_dir, f"shard-{k}.ring") for k in range(shards)]


def tuning_role(stage_id: str, shard: int, shards: int) -> str:
    """The name a stage process tunes (and records its knobs) under: its id, ``-shard<k>`` when sharded."""
    return stage_id + (f"-shard{shard}" if shards > 1 else "")


def stage_roles(n_stages: int) -> dict[int, str]:
    """Participant role ids and their names, for snapshots."""
    roles = {ROLE_PRODUCER: "producer", ROLE_EGRESS: "egress"}
    roles.update({ROLE_STAGE_BASE + i: f"stage {i}" for i in range(n_stages)})
    return roles


class MpExecutor:
    """Runs a SingleRing spec with one process per stage per shard. Not thread-safe for producers.

    Raises :class:`~byteor.ShmError` when a ring file cannot be created (it exists and is in use,
    or the directory is not writable), :class:`~byteor.UsageError` for a message larger than
    ``slot_bytes``, and :class:`~byteor.PipelineFailed` (from ``publish*`` or ``close``) once a stage
    failed or kept dying.
    """

    def __init__(self, spec: SingleRingSpecV1, stages: Sequence[ResolvedStage], *, spec_hash: str,
                 sink: BatchSink, context: StageContext, ring_path: str | None = None,
                 wait: str = "backoff", heartbeat_timeout: float = 30.0, max_restarts: int = 5,
                 restart_window: float = 60.0, tuning: TuningPlan | None = None,
                 output: NativeOutput | None = None) -> None:
        if wait not in WAITS:
            raise UsageError(f"--wait must be one of {'|'.join(WAITS)}, got {wait!r}")
        self.spec = spec
        self.spec_hash = spec_hash
        self.wait_name = wait
        self._wait = WAITS[wait]
        self._sink = sink
        self._router = Router(spec)
        self._slot_bytes = spec.slot_bytes
        self._capacity = spec.capacity
        self.ring_dir = ring_path or default_ring_dir(spec, spec_hash)
        self.paths = ring_files(self.ring_dir, spec.shards)
        self._hash_raw = bytes.fromhex(spec_hash.removeprefix("sha256:"))
        n = len(spec.stages)
        self._egress_c = n
        deps = [sum(1 << d for d in ds) for ds in effective_deps(spec)]
        self._deps = [*deps, (1 << n) - 1]
        self._stages = list(stages)
        self._ctx = context_to_json(context)
        self._recorder = context.recorder
        self._rings: list[Any] = []
        self._created_dir = False
        self._created: list[str] = []
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None
        self._aborted = threading.Event()
        self._sink_lock = threading.Lock()
        self._supervisor: Supervisor | None = None
        self._heartbeat_timeout = heartbeat_timeout
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._closed = False
        self._tuning = tuning
        #: role -> knob states the stage processes recorded (read at cleanup, before the file goes)
        self.tuning_record: dict[str, list[dict[str, str]]] | None = None
        self._egress_pos = [-1] * spec.shards
        self._output = output
        self._native_egress: list[Any] = []  # the native Egress of each shard, when ``output`` is given
        self._egress_slots = [-1] * spec.shards  # native egress: each shard's participant slot
        self._ingest: Any = None  # the native Ingest while :meth:`ingest` runs one
        self._ingested = 0
        self.counters: counters.CountersFile | None = None
        self._row = counters.Row.detached()
        self.messages_in = 0
        self.messages_out = 0
        self.dropped = 0

    preferred_batch = 4096

    # ------------------------------------------------------------------ start

    def _create_rings(self) -> None:
        from ..shm import create_ring, private_ring_dir

        existed = os.path.isdir(self.ring_dir)
        try:
            private_ring_dir(self.ring_dir)  # ours, 0700, not planted by another user
        except OSError as exc:
            raise ShmError(f"cannot create ring directory {self.ring_dir}: {exc.strerror or exc}") from None
        self._created_dir = not existed
        for path in self.paths:
            if os.path.exists(path):
                self._reclaim_stale(path)
            ring = create_ring(path, self._capacity, self._slot_bytes, self._deps, self._hash_raw)
            self._rings.append(ring)
            self._created.append(path)
        rows = [("session", counters.KIND_SESSION, 0)]
        rows += [(st.id, counters.KIND_STAGE, k) for k in range(self.spec.shards) for st in self.spec.stages]
        try:
            self.counters = counters.CountersFile.create(counters.counters_path(self.ring_dir), rows)
        except OSError as exc:
            raise ShmError(f"cannot create {counters.counters_path(self.ring_dir)}: {exc.strerror}") from None
        self._row = self.counters.row(0)

    def _stage_row(self, shard: int, index: int) -> int:
        return 1 + shard * len(self.spec.stages) + index

    def _reclaim_stale(self, path: str) -> None:
        from ..shm import stale_files, unlink

        if os.path.abspath(path) in {os.path.abspath(p) for p in stale_files(self.ring_dir)}:
            unlink(path)
            return
        raise ShmError(f"ring file {path} exists and is in use by a running pipeline; stop it first or "
                       "pass another --ring-path")

    def start(self) -> None:
        """Create the rings, start the stage processes, the supervisor and the egress threads."""
        try:
            self._create_rings()
            pid = os.getpid()
            self._producer_slots = [r.register_participant(ROLE_PRODUCER, pid) for r in self._rings]
            procs: list[StageProcess] = []
            for k, path in enumerate(self.paths):
                for i, (st, rs) in enumerate(zip(self.spec.stages, self._stages, strict=True)):
                    name = f"stage {i} {st.id!r}" + (f" (shard {k})" if self.spec.shards > 1 else "")
                    cfg: dict[str, Any] = {
                        "ring": path, "hash_hex": self._hash_raw.hex(), "consumer": i, "index": i,
                        "stage_id": st.id, "op": st.op, "delta": st.delta, "resolver_key": st.resolver_key,
                        "wait": self._wait, "context": self._ctx, "native": rs.builtin is not None,
                        "error_path": os.path.join(self.ring_dir, f"shard-{k}.stage-{i}.error"),
                        "events_path": os.path.join(self.ring_dir, f"shard-{k}.stage-{i}.events"),
                        "tuning_role": tuning_role(st.id, k, self.spec.shards),
                        "counters": [counters.counters_path(self.ring_dir), self._stage_row(k, i)],
                    }
                    if self._tuning is not None:
                        cfg["tuning"] = self._tuning.to_json(os.path.join(self.ring_dir, RUNTIME_CONFIG_FILE))
                    assert self.counters is not None
                    procs.append(StageProcess(shard=k, index=i, consumer=i, name=name, config=cfg,
                                              row=self.counters.row(self._stage_row(k, i))))
            self._supervisor = Supervisor(self._rings, procs, on_failure=self._on_failure,
                                          max_restarts=self._max_restarts,
                                          restart_window=self._restart_window,
                                          heartbeat_timeout=self._heartbeat_timeout)
            self._supervisor.start()
            self._supervisor.run_in_thread()
            out = self._output
            if out is not None:
                flush_ns = min(max(int(out.flush_interval * 1e9), 1_000_000), 1_000_000_000)
                self._native_egress = [
                    _native.Egress(out.fd, out.framing, ring, self._egress_c, wait=self._wait, label=out.label,
                                   flush_interval_ns=flush_ns) for ring in self._rings]
            for k in range(len(self._rings)):
                target = self._egress_native if out is not None else self._egress
                t = threading.Thread(target=target, args=(k,), name=f"byteor-egress-{k}", daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ producer

    def _on_failure(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    def _settle(self) -> None:
        """After a failure: let egress deliver what the other stages still finish, then stop it."""
        if not self._aborted.is_set():
            wait_quiet(self.progress)
            self._stop_egress()

    def _check_failed(self) -> None:
        if self._failure is not None:
            self._settle()
            raise self._failure

    def _too_big(self, n: int, index: int) -> UsageError:
        return UsageError(f"message {index} is {n} bytes, larger than "
                          f"pipeline.ring.slot_bytes={self._slot_bytes}")

    def offer(self, endpoint: int, items: Sequence[BytesLike], timeout: float = 0.05) -> int:
        """Publish a prefix of ``items`` (each to its shard), waiting at most ``timeout`` seconds
        for room; returns how many were published. One claim and one cursor store per batch and
        shard. Raises :class:`~byteor.UsageError` for a message larger than ``slot_bytes``."""
        self._check_failed()
        timeout_ns = int(timeout * 1e9)
        if len(self._rings) == 1:
            ring = self._rings[0]
            before = ring.cursor()
            try:
                # publish_many checks every length before it publishes anything: no Python pass here
                ring.publish_many(items, self._wait, timeout_ns)
                done = len(items)
            except TimeoutError:
                done = ring.cursor() - before  # publish_many publishes what fits before it waits
            except ValueError:
                bad = self._oversized(items)
                if bad is None:
                    raise
                return self.offer(endpoint, items[:bad], timeout)  # what comes before it is still taken
            self.messages_in += done
            self._row.set(_IN, self.messages_in)
            return done
        bad = self._oversized(items)
        if bad is not None:
            items = items[:bad]
        route = self._router.route
        done = 0
        for item in items:
            ring = self._rings[route(item)]
            if not ring.try_publish(item):
                try:
                    ring.publish(item, self._wait, timeout_ns)
                except TimeoutError:
                    self._router.unroute()
                    break
            done += 1
        self.messages_in += done
        self._row.set(_IN, self.messages_in)
        return done

    def _oversized(self, items: Sequence[BytesLike]) -> int | None:
        """The index of the first message larger than ``slot_bytes`` (None: none is). Raises
        :class:`~byteor.UsageError` when it is the first one: nothing before it to take."""
        limit = self._slot_bytes
        bad = next((i for i, item in enumerate(items) if len(item) > limit), None)
        if bad == 0:
            raise self._too_big(len(items[0]), self.messages_in)
        return bad

    def mark(self) -> tuple[int, ...]:
        """The last sequence published into each shard's ring."""
        return tuple(int(ring.cursor()) for ring in self._rings)

    def progress(self) -> tuple[int, ...]:
        """The last sequence each shard's egress handed to the sink (or found dropped)."""
        if self._native_egress:
            self._sync_native()
        return tuple(self._egress_pos)

    def tick(self) -> None:
        """Serve the parent's duties between batches: raise a stage failure; with native edges, bring
        the counters up to date and beat for the egress threads (they run in C, in this process)."""
        if self._native_egress or self._ingest is not None:
            self._sync_native()
            for ring, slot in zip(self._rings, self._egress_slots, strict=False):
                if slot >= 0:
                    with contextlib.suppress(Exception):
                        ring.heartbeat(slot)
        self._check_failed()

    @property
    def native_output(self) -> bool:
        """Whether egress writes the output descriptor itself (no sink calls)."""
        return self._output is not None

    #: :meth:`ingest` can feed every SingleRing (it routes shards as :meth:`offer` does)
    ingest_supported = True

    def ingest(self, fd: int, framing: str, *, label: str, error: type[BaseException]) -> Any:
        """A native reader of ``fd`` in input framing ``framing`` (``lines``, ``hex``, ``len32``) that
        publishes into the rings routed as :meth:`offer` routes (``_native.Ingest``: parsing in C,
        GIL released). The caller runs it (``run()``, usually in a thread) and calls :meth:`ingested`
        when it returned; meanwhile nothing else may publish. Malformed input raises ``error`` naming
        ``label`` and where, after everything before it was published."""
        self._check_failed()
        router = self._router
        kw: dict[str, Any] = {"route": router.mode}
        if router.mode == "key":
            assert self.spec.shard_key is not None
            kw.update(key_offset=self.spec.shard_key.offset, key_len=self.spec.shard_key.length)
        self._ingested = self.messages_in
        self._ingest = _native.Ingest(fd, framing, self._rings, wait=self._wait, label=label, error=error, **kw)
        return self._ingest

    def ingested(self) -> None:
        """The native reader of :meth:`ingest` returned: its messages count as published."""
        self._sync_native()
        self._ingest = None

    # ------------------------------------------------------------------ egress

    def _egress(self, k: int) -> None:
        ring = self._rings[k]
        c = self._egress_c
        dropped_len = _native.DROPPED_LENGTH
        read_bytes = ring.read_bytes
        row = self._row
        slot = ring.register_participant(ROLE_EGRESS, os.getpid())
        nxt = ring.next_for(c)
        try:
            while True:
                avail = ring.wait_for(c, nxt, self._wait, _POLL_NS)
                if avail < 0:
                    ring.heartbeat(slot)
                    if self._aborted.is_set():
                        return
                    if ring.stop_requested() and nxt > ring.cursor():
                        return
                    continue
                batch = []
                drops = 0
                for seq in range(nxt, avail + 1):
                    if ring.length(seq) == dropped_len:
                        drops += 1
                    else:
                        batch.append(read_bytes(seq))
                if batch:
                    with self._sink_lock:
                        self._sink(k, batch)
                        self.messages_out += len(batch)
                        self.dropped += drops
                        row.set(_OUT, self.messages_out)
                        row.set(_DROPPED, self.dropped)
                elif drops:
                    with self._sink_lock:
                        self.dropped += drops
                        row.set(_DROPPED, self.dropped)
                ring.release(c, avail)
                ring.heartbeat(slot)
                self._egress_pos[k] = avail
                nxt = avail + 1
        except BrokenPipeError as exc:  # the reader of our output went away (`| head`): the CLI exits quietly
            self._on_failure(exc)
            self._stop_egress()
        except BaseException as exc:
            self._on_failure(PipelineFailed(f"egress of shard {k} failed: {type(exc).__name__}: {exc}"))
        finally:
            with contextlib.suppress(Exception):
                ring.unregister_participant(slot)

    def _egress_native(self, k: int) -> None:
        """Shard ``k``'s egress in C (``_native.Egress``, GIL released): encode and write every message
        to the output descriptor; counts and progress are read by :meth:`tick` / :meth:`progress`."""
        ring = self._rings[k]
        egress = self._native_egress[k]
        slot = ring.register_participant(ROLE_EGRESS, os.getpid())
        self._egress_slots[k] = slot
        try:
            if not self._aborted.is_set():
                egress.run()
        except BrokenPipeError as exc:  # the reader of our output went away (`| head`): the CLI exits quietly
            self._on_failure(exc)
            self._stop_egress()
        except OSError as exc:  # the message names the option and the reason
            self._on_failure(PipelineFailed(str(exc)))
        except BaseException as exc:
            self._on_failure(PipelineFailed(f"egress of shard {k} failed: {type(exc).__name__}: {exc}"))
        finally:
            self._sync_native()
            with contextlib.suppress(Exception):
                ring.unregister_participant(slot)

    def _stop_egress(self) -> None:
        """Egress stops at once (a Python egress at its next wait slice, a native one after writing
        what it has encoded)."""
        self._aborted.set()
        for egress in self._native_egress:
            egress.stop()

    def _sync_native(self) -> None:
        """Counters and progress from the native edges (their own counters are exact)."""
        if self._ingest is not None:
            self.messages_in = self._ingested + int(self._ingest.messages)
            self._row.set(_IN, self.messages_in)
        if self._native_egress:
            with self._sink_lock:
                for k, egress in enumerate(self._native_egress):
                    self._egress_pos[k] = int(egress.last_seq)
                self.messages_out = sum(int(e.messages) for e in self._native_egress)
                self.dropped = sum(int(e.dropped) for e in self._native_egress)
                self._row.set(_OUT, self.messages_out)
                self._row.set(_DROPPED, self.dropped)

    # ------------------------------------------------------------------ observe

    def stage_pids(self) -> list[int]:
        return self._supervisor.pids() if self._supervisor else []

    def restarts(self) -> dict[str, int]:
        return self._supervisor.restarts() if self._supervisor else {}

    def fill(self) -> float:
        """The fullest ring's fill (published but not yet through egress), 0..1."""
        best = 0.0
        for ring in self._rings:
            with contextlib.suppress(Exception):
                best = max(best, (ring.cursor() - ring.gating(self._egress_c)) / self._capacity)
        return best

    # ------------------------------------------------------------------ stop

    def drain(self, timeout: float | None = None) -> None:
        """Every published message reaches the sink; the stage processes exit.

        Raises :class:`~byteor.PipelineFailed` if a stage failed. :meth:`close` removes the files.
        """
        if self._closed:
            return
        for ring in self._rings:
            ring.request_stop()
        sup = self._supervisor
        if sup is not None and not sup.wait_finished(timeout):
            self._on_failure(PipelineFailed("stages did not drain within the timeout"))
        for t in self._threads:
            while t.is_alive():
                t.join(0.2)
                if self._failure is not None:
                    self._settle()
        self._check_failed()

    def close(self) -> None:
        """Stop whatever still runs and remove the ring files (after :meth:`drain`, or on failure)."""
        self.abort()

    def abort(self) -> None:
        """Stop at once (kill the stages, stop egress) and remove the ring files."""
        if self._closed:
            return
        self._closed = True
        self._stop_egress()
        if self._ingest is not None:
            self._ingest.stop()
        for ring in self._rings:
            with contextlib.suppress(Exception):
                ring.request_stop()
        if self._supervisor is not None:
            self._supervisor.stop(kill=True)
        for t in self._threads:
            t.join(timeout=10)
        self._cleanup()

    def _collect_events(self, path: str) -> None:
        """Hand the side-effect records a stage process wrote to the run's recorder."""
        if self._recorder is None:
            return
        if isinstance(self._recorder, EventLog):
            self._recorder.merge_file(path)
            return
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if "counts" not in event:
                    self._recorder(event)

    def _cleanup(self) -> None:
        from ..shm import unlink

        for ring in self._rings:
            with contextlib.suppress(Exception):
                ring.close()
        self._rings = []
        self._row = counters.Row.detached()
        if self.counters is not None:
            self.counters.close()
            self.counters = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(counters.counters_path(self.ring_dir))
        for path in self._created:  # never another run's files (e.g. a ring found in use)
            with contextlib.suppress(FileNotFoundError):
                unlink(path)
        for k in range(len(self._created)):
            for i in range(len(self.spec.stages)):
                base = os.path.join(self.ring_dir, f"shard-{k}.stage-{i}")
                self._collect_events(base + ".events")
                for suffix in (".error", ".events"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(base + suffix)
        if self._created:  # the record of our stage processes (never another run's)
            with contextlib.suppress(Exception):
                self.tuning_record = read_tuning(self.ring_dir)
            if self._tuning is not None and self.tuning_record:
                self._tuning.effective.update(self.tuning_record)
            remove_runtime_config(self.ring_dir)
        ours = os.path.dirname(os.path.abspath(self.ring_dir)) == DEFAULT_RING_ROOT
        if self._created_dir or (ours and self._created):
            with contextlib.suppress(OSError):
                os.rmdir(self.ring_dir)  # only when empty
