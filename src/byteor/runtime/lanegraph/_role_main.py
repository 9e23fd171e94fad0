"""One role process of the multi-process LaneGraph runner: ``python -m
byteor.runtime.lanegraph._role_main CONFIG`` (CONFIG: JSON written by :mod:`.mp`).

The process reads the graph's canonical spec from the lane path, plans it, resolves its own stage
once, attaches its input and output lanes and moves messages until every input is stopped and
drained, then exits 0. Inputs resume where the cells (ring gating sequence, or the journal position
saved in the stats file) say, so a restarted role neither skips nor re-reads a released message.

A role whose inputs are all rings runs as a native loop (``byteor._native.run_role``): messages move
between the lanes in C, Python runs only a Python stage's function, and each batch is recorded in
the stats file before it is published, so a role killed at any instruction and restarted publishes
nothing twice and loses nothing (exactly once). A role reading a journal lane (or writing one with
``fsync=always``) keeps the Python loop below, where delivery across a crash is at-least-once: a
role killed after publishing a message but before releasing its input publishes it again.

Exit codes follow the runtime's stage processes: 0 drained; ``EXIT_STAGE_FAILED`` (70) the role
failed on its own terms (``on_full=fail``, a stage exception): the supervisor stops the pipeline
with the reason written to ``error_path``; anything else is a death the supervisor restarts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..._errors import PipelineFailed, StageContractError
from ..._stage import DROP, FILTER, INPLACE, MAP, READONLY, StageCall, describe_failure, stage_failure
from ...lanes.journal import JournalReader, JournalSubscription, JournalWriter
from ...lanes.shm import LaneReader, LaneSpec, LaneWriter, attach_lane
from ...spec.kv import decode_kv
from ...spec.model import LaneGraphSpecV1
from .._child import EXIT_STAGE_FAILED, close_recorder, context_from_json, enter_child, write_error
from .._stage_main import ROLE_LANE_BASE
from ._roles import Router, journal_lane_dir, resolve_role_stage, role_index
from ._stats import RoleStats
from .plan import LanePlan, plan_lanegraph

__all__ = ["main", "stop_marker"]

_IDLE_S = 0.001


def stop_marker(lane_path: str, lane: str) -> str:
    """The file whose presence says a journal lane's writers are done (rings use their stop word)."""
    return os.path.join(lane_path, f"{lane}.journal.stopped")


def lane_spec(lp: LanePlan) -> LaneSpec:
    return LaneSpec(lp.name, lp.kind, lp.capacity, lp.slot_bytes, lp.cells)


class _JournalIn:
    """A journal lane input: a subscription whose position is saved in the stats file."""

    def __init__(self, directory: str, start: int, marker: str) -> None:
        self.sub: JournalSubscription = JournalReader(directory).subscribe(start)
        self.marker = marker
        self.batch: deque[bytes] = deque()
        self.done = False

    def fetch(self) -> deque[bytes]:
        if not self.batch:
            stopped = os.path.exists(self.marker)  # look before polling: nothing is written after it
            self.batch.extend(self.sub.poll(256))
            if not self.batch and stopped:
                self.done = True
        return self.batch


class _JournalOut:
    __slots__ = ("drops", "writer")

    def __init__(self, lp: LanePlan, directory: str, fsync: str, spec_hash: str | None = None) -> None:
        self.writer = JournalWriter(directory, segment_bytes=lp.segment_bytes, slot_bytes=lp.slot_bytes,
                                    fsync=fsync, spec_hash=spec_hash)
        self.drops = 0

    def publish(self, msg: Any) -> bool:
        if len(msg) > self.writer.slot_bytes:
            raise PipelineFailed(
                f"message of {len(msg)} bytes exceeds lane {self.writer.directory.name!r} "
                f"slot_bytes={self.writer.slot_bytes}"
            )
        self.writer.append(msg)
        return True


class _Role:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        lane_path = cfg["lane_path"]
        with open(os.path.join(lane_path, "spec.kv"), "rb") as fh:
            spec = decode_kv(fh.read())
        assert isinstance(spec, LaneGraphSpecV1)
        plan = plan_lanegraph(spec)
        self.plan_lanes = plan.lanes
        self.plan = next(r for r in plan.roles if r.name == cfg["role"])
        self.plan_index = plan.roles.index(self.plan)
        wait = int(cfg["wait"])
        shash = cfg["spec_hash"]
        self.stats = RoleStats(cfg["stats_path"])
        self.stats.set_pid(os.getpid())
        self.stage = None
        self.ctx: Any = None
        if self.plan.kind == "stage":
            ctx = self.ctx = context_from_json(cfg["context"], cfg.get("events_path"))
            self.stage = resolve_role_stage(role_index(spec, self.plan), self.plan.role, ctx)
        self.closers: list[Callable[[], None]] = []
        self.ring_inputs: list[LaneReader | None] = []
        self.journal_inputs: list[_JournalIn | None] = []
        for k, ref in enumerate(self.plan.inputs):
            lp = plan.lane(ref.lane)
            if lp.kind == "journal":
                saved = self.stats.journal_pos(k)
                start = saved if saved else int(cfg["journal_starts"][ref.lane])
                jin = _JournalIn(str(journal_lane_dir(cfg["journal_dir"], ref.lane)), start,
                                 stop_marker(lane_path, ref.lane))
                self.closers.append(jin.sub.close)
                self.ring_inputs.append(None)
                self.journal_inputs.append(jin)
            else:
                ring = attach_lane(lane_path, lane_spec(lp), shash)
                self.closers.append(ring.close)
                self.ring_inputs.append(LaneReader(ring, lp.name, ref.cell, wait))
                self.journal_inputs.append(None)
        self.outputs: list[LaneWriter | _JournalOut] = []
        for name in self.plan.outputs:
            lp = plan.lane(name)
            if lp.kind == "journal":
                jout = _JournalOut(lp, str(journal_lane_dir(cfg["journal_dir"], name)), cfg["fsync"], shash)
                self.closers.append(jout.writer.close)
                self.outputs.append(jout)
            else:
                ring = attach_lane(lane_path, lane_spec(lp), shash)
                self.closers.append(ring.close)
                self.outputs.append(LaneWriter(ring, name, lp.on_full, wait, abort=self._tick))
        self.router = Router(self.plan.role, len(self.outputs)) if self.plan.kind == "router" else None
        self.messages_in = self.stats.messages_in
        self.filtered = self.stats.filtered
        self.written = [self.stats.written(k) for k in range(len(self.outputs))]
        for k, out in enumerate(self.outputs):
            out.drops = self.stats.drops(k)
        slot = max([plan.lane(r.lane).slot_bytes for r in self.plan.inputs]
                   + [plan.lane(n).slot_bytes for n in self.plan.outputs])
        self.scratch = bytearray(slot)
        self.view = memoryview(self.scratch)
        self.ro_view = self.view.toreadonly()
        self.call = StageCall(self.stage, slot) if self.stage is not None else None
        self.parent = int(cfg["parent_pid"])

    def _tick(self) -> bool:
        """Called every 100 ms while blocked on a full output: beat (blocked is not hung), and give
        up if the parent is gone."""
        self.flush_stats()
        return os.getppid() != self.parent

    def flush_stats(self) -> None:
        drops = [o.drops for o in self.outputs]
        self.stats.update(self.messages_in, self.written, drops, time.monotonic_ns(), self.filtered)

    def handle(self, msg: Any) -> None:
        """Process one input message (a read-only view or bytes)."""
        self.messages_in += 1
        call = self.call
        if call is not None:
            n = len(msg)
            self.scratch[:n] = msg
            try:
                result = call.call(self.view if call.writes else self.ro_view, n)
            except Exception as exc:
                failure = stage_failure(f"stage role {self.plan.name!r}", self.messages_in - 1, exc)
                if failure is exc:
                    raise
                raise failure from exc
            if result == DROP:
                self.filtered += 1
                return
            msg = self.view[:result]
        k = self.router.choose(msg) if self.router is not None else 0
        if self.outputs[k].publish(msg):
            self.written[k] += 1
        if self.router is not None:
            self.router.delivered()

    def run(self) -> None:
        if self._native_outputs() is not None:
            self._run_native()
        elif len(self.plan.inputs) == 1:
            self._run_single()
        else:
            self._run_merge()
        self.flush_stats()

    def _native_outputs(self) -> list[tuple[Any, str, str]] | None:
        """The outputs as ``run_role`` takes them, or None when this role must run the Python loop (a
        journal input, or a journal output whose appends must stay in Python)."""
        if any(reader is None for reader in self.ring_inputs):
            return None
        outs: list[tuple[Any, str, str]] = []
        for name, out in zip(self.plan.outputs, self.outputs, strict=True):
            on_full = self.plan_lanes[name].on_full
            if isinstance(out, _JournalOut):
                if out.writer.native_segment() is None:
                    return None
                outs.append((out.writer, on_full, name))
            else:
                outs.append((out.ring, on_full, name))
        return outs

    def _stage_entry(self) -> dict[str, Any]:
        """How the native loop runs this role's stage: a builtin kernel, or the stage function in its
        form (called by the core exactly as :class:`~byteor._stage.StageCall` calls it here)."""
        from ... import _native

        stage = self.stage
        if stage is None:
            return {}
        if stage.builtin is not None:
            return {"op": stage.builtin[0], "delta": int(stage.builtin[1])}
        forms = {MAP: _native.FORM_MAP, FILTER: _native.FORM_FILTER, INPLACE: _native.FORM_INPLACE,
                 READONLY: _native.FORM_READONLY}
        return {"fn": stage.fn, "form": forms[str(stage.form)], "side_effect": stage.side_effect,
                "contract_error": StageContractError}

    def _run_native(self) -> None:
        """Move every message in C (``_native.run_role``) until every input is stopped and drained."""
        from ... import _native

        outputs = self._native_outputs()
        assert outputs is not None
        inputs = [(reader.ring, reader.cell) for reader in self.ring_inputs if reader is not None]
        # exact counters first (a crashed run may have published after its last counter update):
        # everything consumed on the inputs, everything in a lane this role alone writes
        self.stats.set_messages_in(sum(int(ring.gating(cell)) + 1 for ring, cell in inputs))
        for k, (target, _full, name) in enumerate(outputs):
            lp = self.plan_lanes[name]
            if lp.kind == "journal":
                self.stats.set_written(k, int(target.next_index) - int(self.cfg["journal_starts"][name]))
            elif lp.kind != "mpsc":
                self.stats.set_written(k, int(target.cursor()) + 1)
        kw: dict[str, Any] = self._stage_entry()
        key = self.plan.route_key
        if self.plan.kind == "router" and key is not None:
            kw.update(route="key", key_offset=key.offset, key_len=key.length)
        elif self.plan.kind == "router":
            kw["route"] = "round_robin"
        try:
            # participant_role: a restart of this role repairs what it claimed on mpsc outputs
            _native.run_role(self.plan.kind, inputs, outputs, self.stats.buffer, wait=int(self.cfg["wait"]),
                             parent_pid=self.parent, error=PipelineFailed,
                             participant_role=ROLE_LANE_BASE + self.plan_index, **kw)
        except Exception as exc:
            seq = getattr(exc, "failed_seq", None)
            if seq is None:  # not the stage function's: a lane full under fail, an oversized message
                raise
            failure = stage_failure(f"stage role {self.plan.name!r}", int(seq), exc)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            self.messages_in = self.stats.messages_in
            self.filtered = self.stats.filtered
            self.written = [self.stats.written(k) for k in range(len(self.outputs))]
            for k, out in enumerate(self.outputs):
                out.drops = self.stats.drops(k)

    def _run_single(self) -> None:
        reader, jin = self.ring_inputs[0], self.journal_inputs[0]
        if reader is not None:
            while True:
                hi = reader.wait()
                if hi < 0:
                    if reader.finished():
                        return
                    self.flush_stats()
                    continue
                for seq in range(reader.next, hi + 1):
                    if not reader.dropped(seq):
                        self.handle(reader.read(seq))
                    reader.release(seq)
                    if not seq & 255:  # beat during long batches: a slow stage is busy, not hung
                        self.flush_stats()
                self.flush_stats()
        assert jin is not None
        while True:
            batch = jin.fetch()
            if not batch:
                if jin.done:
                    return
                self.flush_stats()
                time.sleep(_IDLE_S)
                continue
            while batch:
                self.handle(batch.popleft())
                self.stats.set_journal_pos(0, jin.sub.position - len(batch))
            self.flush_stats()

    def _run_merge(self) -> None:
        """Fair merge: one message from each input in turn; idle inputs are skipped."""
        n = len(self.plan.inputs)
        done = [False] * n
        turn = 0
        idle = 0
        while not all(done):
            k = turn
            turn = (turn + 1) % n
            if done[k]:
                continue
            reader, jin = self.ring_inputs[k], self.journal_inputs[k]
            got = False
            if reader is not None:
                hi = reader.wait(0)
                if hi >= 0:
                    seq = reader.next
                    if not reader.dropped(seq):
                        self.handle(reader.read(seq))
                    reader.release(seq)
                    got = True
                elif reader.finished():
                    done[k] = True
            else:
                assert jin is not None
                batch = jin.fetch()
                if batch:
                    self.handle(batch.popleft())
                    self.stats.set_journal_pos(k, jin.sub.position - len(batch))
                    got = True
                elif jin.done:
                    done[k] = True
            if got:
                idle = 0
                continue
            idle += 1
            if idle >= n:  # a whole turn found nothing: wait a little on the next live input
                idle = 0
                self.flush_stats()
                nxt = next((i for i in range(n) if not done[(turn + i) % n]), None)
                target = self.ring_inputs[(turn + nxt) % n] if nxt is not None else None
                if target is not None:
                    target.wait(1_000_000)
                else:
                    time.sleep(_IDLE_S)

    def close(self) -> None:
        if self.stage is not None and self.stage.close is not None:
            self.stage.close()
        close_recorder(self.ctx)
        for close in reversed(self.closers):
            close()
        self.stats.close()


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    enter_child(cfg)
    role: _Role | None = None
    try:
        from ... import _native
        from .._tuning import tune_this_process

        # once per process, before anything runs: profile knobs, logged and recorded
        tuned, _report = tune_this_process(cfg.get("tuning"), cfg["role"])
        if tuned is not None:
            cfg["wait"] = int(getattr(_native, "WAIT_" + tuned.upper()))
        role = _Role(cfg)
        role.run()
    except Exception as exc:
        msg = str(exc) if isinstance(exc, PipelineFailed) else describe_failure(f"role {cfg['role']!r}", None, exc)
        write_error(cfg["error_path"], msg)
        return EXIT_STAGE_FAILED
    finally:
        if role is not None:
            role.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
