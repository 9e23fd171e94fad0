"""The supervisor: starts one process per stage per ring, watches them, restarts the dead ones.

Detection: a child whose process has exited (``poll``), or whose participant heartbeat has not moved
for ``heartbeat_timeout`` seconds while it has work waiting (an idle stage blocked on the futex does
not need to beat), is dead; a hung one is killed first. A restarted stage attaches the same ring,
completes any interrupted in-place change (``recover``) and resumes from its gating sequence + 1, so
nothing published is lost, duplicated or half-modified.

A stage that exits with :data:`~byteor.runtime._stage_main.EXIT_STAGE_FAILED` failed on its own
terms (an exception, a side effect that finally failed) and stops the pipeline; so does a stage that
dies more than ``max_restarts`` times within ``restart_window`` seconds. Either way
:attr:`Supervisor.failure` names the stage.

Each process's state (``starting`` from spawn until it registered with its ring or stats file,
``running``, ``restarting`` between a death and the next spawn, ``exited`` after draining,
``failed``), pid and restart count go into its row of the run's counters file when it has one
(:mod:`byteor.obs.counters`), where ``/readyz``, the metrics and ``byteor top`` read them; the
transitions are reported as ``stage.*`` events (:func:`byteor.obs.emit`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import PipelineFailed
from ..obs import counters
from ..obs.events import emit
from ._child import EXIT_STAGE_FAILED

__all__ = ["StageProcess", "Supervisor", "wait_quiet"]

#: How often exits are looked for once the run drains (a stage exits within milliseconds of the stop
#: word; polling at the normal interval added up to two intervals to every run's end).
_DRAIN_POLL_S = 0.002
#: Minimum time a child that has not registered yet may take with work waiting before it counts as hung.
STARTUP_GRACE_S = 5.0


@dataclass
class StageProcess:
    """One supervised stage process: which ring and stage it serves, its config, its history."""

    shard: int
    index: int
    consumer: int
    name: str
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)
    total_restarts: int = 0
    finished: bool = False
    last_beat: int = -1
    last_beat_change: float = 0.0
    #: its row in the run's counters file (a detached row when the run has none)
    row: counters.Row = field(default_factory=counters.Row.detached)
    up: bool = False

    def set_state(self, state: int) -> None:
        self.row.set(counters.WORDS["state"], state)


class Supervisor:
    """Owns the stage processes of one pipeline. ``start()``, then ``run_in_thread()``; ``stop()``.

    ``rings[shard]`` are the parent's attached rings (used to read participants and gating).
    ``on_failure(exc)`` is called once when the pipeline must stop.

    Other kinds of child (LaneGraph roles) plug in with ``main_module`` (run as ``python -m
    main_module CONFIG_JSON``), ``env`` (the children's environment, default this process's) and
    ``probe(sp) -> (pending, heartbeat)``: whether the child has work waiting now, and its current
    heartbeat counter (None when unknown). With a ``probe`` the children are not ring participants.
    """

    def __init__(self, rings: list[Any], stages: list[StageProcess], *,
                 on_failure: Callable[[PipelineFailed], None], max_restarts: int = 5,
                 restart_window: float = 60.0, heartbeat_timeout: float = 30.0,
                 poll_interval: float = 0.05, main_module: str = "byteor.runtime._stage_main",
                 env: dict[str, str] | None = None,
                 probe: Callable[[StageProcess], tuple[bool, int | None]] | None = None) -> None:
        self.rings = rings
        self._n_cells = int(rings[0].n_consumers) if rings else 0
        self.stages = stages
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.heartbeat_timeout = heartbeat_timeout
        self.poll_interval = poll_interval
        self._on_failure = on_failure
        self._main_module = main_module
        self._env = env
        self._probe = probe
        self.failure: PipelineFailed | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        #: set by wait_finished: the stages are exiting, look often so the run ends when they did
        self._draining = False

    # ------------------------------------------------------------------ lifecycle

    def _spawn(self, sp: StageProcess) -> None:
        sp.config["parent_pid"] = os.getpid()
        argv = [sys.executable, "-m", self._main_module, json.dumps(sp.config)]
        # A stage's own prints go to stderr: stdout carries the pipeline's output.
        sp.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=_stderr_fd(), close_fds=True,
                                   env=self._env)
        sp.last_beat = -1
        sp.last_beat_change = time.monotonic()
        sp.up = False
        sp.row.set(counters.WORDS["pid"], sp.proc.pid)
        sp.set_state(counters.STARTING)
        emit("stage.started", f"{sp.name} started (pid {sp.proc.pid})", text=False, stage=sp.name,
             shard=sp.shard, pid=sp.proc.pid, restarts=sp.total_restarts)

    def start(self) -> None:
        for sp in self.stages:
            self._spawn(sp)

    def run_in_thread(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="byteor-supervisor", daemon=True)
        self._thread.start()

    def all_finished(self) -> bool:
        return all(sp.finished for sp in self.stages)

    def expect_exits(self) -> None:
        """The stages were told to stop: look for their exits every few milliseconds from now on."""
        self._draining = True

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Wait until every stage has exited after draining (or the pipeline failed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.expect_exits()
        while not self.all_finished() and self.failure is None:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(_DRAIN_POLL_S)
        return self.failure is None

    def stop(self, *, kill: bool = False) -> None:
        """Stop watching; with ``kill`` terminate every child still running (failure path)."""
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if kill:
            self.kill_all()

    def kill_all(self) -> None:
        for sp in self.stages:
            if sp.proc is not None and sp.proc.poll() is None:
                sp.proc.kill()
        for sp in self.stages:
            if sp.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    sp.proc.wait(timeout=10)

    def pids(self) -> list[int]:
        return [sp.proc.pid for sp in self.stages if sp.proc is not None and sp.proc.poll() is None]

    def restarts(self) -> dict[str, int]:
        return {sp.name: sp.total_restarts for sp in self.stages if sp.total_restarts}

    # ------------------------------------------------------------------ watching

    def _fail(self, message: str, sp: StageProcess | None = None) -> None:
        if sp is not None:
            sp.set_state(counters.FAILED)
        if self.failure is None:
            # the run's own error line says it on a terminal; a log pipeline gets the event
            emit("stage.failed", message, level="error", text=False, stage=sp.name if sp is not None else None)
            self.failure = PipelineFailed(message)
            self._halt.set()
            self._on_failure(self.failure)

    def _pending(self, sp: StageProcess) -> bool:
        """Whether the stage has work it could do now: its barrier (the cursor and every stage it
        depends on) is past its gating. A stage stuck behind a hung dependency is not hung itself."""
        if self._probe is not None:
            return self._probe(sp)[0]
        ring = self.rings[sp.shard]
        barrier = int(ring.cursor())
        mask = int(ring.deps[sp.consumer])
        for d in range(self._n_cells):
            if mask >> d & 1:
                barrier = min(barrier, int(ring.gating(d)))
        return int(ring.gating(sp.consumer)) < barrier

    def _beat_of(self, sp: StageProcess) -> int | None:
        assert sp.proc is not None
        if self._probe is not None:
            return self._probe(sp)[1]
        for _slot, _role, pid, beat, _state in self.rings[sp.shard].participant_slots():
            if pid == sp.proc.pid:
                return int(beat)
        return None

    def _drop_participant(self, sp: StageProcess, pid: int) -> None:
        if self._probe is not None:
            return  # not ring participants: nothing to unregister
        ring = self.rings[sp.shard]
        for slot, _role, ppid, _beat, _state in ring.participant_slots():
            if ppid == pid:
                with contextlib.suppress(ValueError, IndexError, OSError):
                    ring.unregister_participant(slot, True)

    def _limit(self, beat: int | None) -> float:
        """How long a child with work waiting may go without a beat. One that has not registered
        yet (``beat`` None: still importing, tuning, attaching) gets at least
        :data:`STARTUP_GRACE_S`, so a slow start on a loaded host is not taken for a hang."""
        return self.heartbeat_timeout if beat is not None else max(self.heartbeat_timeout, STARTUP_GRACE_S)

    def _check(self, sp: StageProcess) -> None:
        proc = sp.proc
        if proc is None or sp.finished:
            return
        rc = proc.poll()
        now = time.monotonic()
        if rc is None:
            beat = self._beat_of(sp)
            if beat is not None and not sp.up:  # registered: attached and about to work
                sp.up = True
                sp.set_state(counters.RUNNING)
                emit("stage.running", f"{sp.name} is running (pid {proc.pid})", text=False, stage=sp.name,
                     shard=sp.shard, pid=proc.pid)
            if beat is not None and beat != sp.last_beat:
                sp.last_beat, sp.last_beat_change = beat, now
            elif not self._pending(sp):
                sp.last_beat_change = now
            elif now - sp.last_beat_change > (limit := self._limit(beat)):
                emit("stage.hung", f"{sp.name} (pid {proc.pid}) has not beaten for {limit:.1f} s with work "
                     "waiting; killing it", level="warning", stage=sp.name, shard=sp.shard, pid=proc.pid)
                proc.kill()
                proc.wait(timeout=10)
                rc = -9
            if rc is None:
                return
        if rc == 0:
            sp.finished = True
            sp.set_state(counters.EXITED)
            emit("stage.exited", f"{sp.name} (pid {proc.pid}) exited after draining", text=False,
                 stage=sp.name, shard=sp.shard, pid=proc.pid)
            return
        if rc == EXIT_STAGE_FAILED:
            reason = _read_error(sp.config.get("error_path"))
            self._fail(reason or f"{sp.name} failed (exit {rc})", sp)
            return
        # A death: restart unless it keeps dying.
        sp.set_state(counters.RESTARTING)
        self._drop_participant(sp, proc.pid)
        while sp.restarts and now - sp.restarts[0] > self.restart_window:
            sp.restarts.popleft()
        if len(sp.restarts) >= self.max_restarts:
            self._fail(f"{sp.name} keeps dying ({len(sp.restarts) + 1} deaths within "
                       f"{self.restart_window:.0f} s, last exit {_describe_rc(rc)}); pipeline stopped", sp)
            return
        sp.restarts.append(now)
        sp.total_restarts += 1
        sp.row.set(counters.WORDS["restarts"], sp.total_restarts)
        emit("stage.restarted", f"{sp.name} (pid {proc.pid}) died ({_describe_rc(rc)}); restarting it",
             level="warning", stage=sp.name, shard=sp.shard, pid=proc.pid, exit=_describe_rc(rc),
             restarts=sp.total_restarts)
        self._spawn(sp)

    def _watch(self) -> None:
        while not self._halt.is_set():
            for sp in self.stages:
                try:
                    self._check(sp)
                except Exception as exc:  # the watcher must not die silently
                    self._fail(f"supervisor error while watching {sp.name}: {type(exc).__name__}: {exc}", sp)
                if self.failure is not None:
                    return
            if self.all_finished():
                return
            self._halt.wait(_DRAIN_POLL_S if self._draining else self.poll_interval)


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by a non-file object
        return subprocess.DEVNULL


def _describe_rc(rc: int) -> str:
    if rc < 0:
        import signal

        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit {rc}"


def _read_error(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
        os.unlink(path)
        return text or None
    except OSError:
        return None


def wait_quiet(progress: Callable[[], object], *, quiet_s: float = 0.3, limit_s: float = 5.0) -> None:
    """Wait until ``progress()`` has not changed for ``quiet_s`` seconds (at most ``limit_s``).

    After a stage failed, the stages before and after it still finish the messages they can and
    egress delivers them: what was accepted before the failing message is not lost."""
    deadline = time.monotonic() + limit_s
    last = progress()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
